"""`Checkpoint`: one lazily opened model, whatever its format.

Opening reads headers only; `get` reads one tensor on demand. Safetensors bytes are
fetched with `os.preadv` straight into the caller's buffer: this keeps the page cache out
of our RSS (mmapped pages count once touched) and, with buffers the caller reuses, avoids
the first-touch page faults that halve throughput. Pickled checkpoints are loaded by
`torch.load(mmap=True)` and copied out tensor by tensor.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from core.checkpoints.safetensors_format import REDOWNLOAD
from core.checkpoints.tensor_info import TensorInfo, byte_view
from core.errors import CheckpointError

CHUNK_BYTES = 64 << 20  # read granularity: bounds the time between cancel checks
CONVERT_ELEMENTS = 4 << 20  # elements per staging chunk when the dtype changes while reading

CheckFn = Callable[[], None]


@dataclass(frozen=True)
class FileTensor:
    """A tensor stored raw (little-endian, C order) at [start, end) of files[file]."""

    info: TensorInfo
    file: int
    start: int
    end: int


@dataclass(frozen=True)
class LoadedTensor:
    """A tensor already materialised (typically mmapped) by torch.load."""

    info: TensorInfo
    tensor: torch.Tensor


Entry = FileTensor | LoadedTensor

# Prefixes a training wrapper puts on every name: DataParallel's, torch.compile's.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(
    names: list[str], prefixes: tuple[str, ...] = WRAPPER_PREFIXES
) -> tuple[dict[str, str], str | None]:
    """{name in the file: name to use} without the `prefixes` that every name carries,
    each at most once and nested in any order (`module._orig_mod.`, `_orig_mod.module.`),
    and a note saying so (None if nothing was stripped).

    Every format reads the same model under the same names, so a `.pt` and a
    `.safetensors` of one DataParallel model merge with each other and with the plain one."""
    mapping = {n: n for n in names}
    stripped = []
    while (prefix := shared_first_part(mapping.values())) in prefixes and prefix not in stripped:
        mapping = {k: v[len(prefix) :] for k, v in mapping.items()}
        stripped.append(prefix)
    if not stripped:
        return mapping, None
    return mapping, (
        f"names read without the prefix '{''.join(stripped)}' that every one carries in "
        "the file (a training wrapper's); outputs use the names without it"
    )


def shared_first_part(names: Iterable[str]) -> str | None:
    """The first dotted part that every name shares, with its dot (`model.`), when every
    name has more after it; else None.

    The one test of "a wrapper's prefix on every name": the readers drop the prefixes
    known to be wrappers' (`WRAPPER_PREFIXES`, and Lightning's `model.` where the file says
    it is Lightning's); architecture detection tries any such shared part (a `net.` or a
    `model.` saved without Lightning's marker) when the names do not fit as they are."""
    heads = set()
    for name in names:
        head, dot, rest = name.partition(".")
        if not dot or not rest:
            return None
        heads.add(head)
        if len(heads) > 1:
            return None
    return f"{heads.pop()}." if heads else None


def renamed_entries(entries: dict[str, Entry], mapping: dict[str, str]) -> dict[str, Entry]:
    """The entries under their new names (the bytes they point at are unchanged)."""
    out: dict[str, Entry] = {}
    for old, entry in entries.items():
        info = entry.info
        new_info = TensorInfo(mapping[old], info.shape, info.dtype, info.nbytes)
        if isinstance(entry, FileTensor):
            out[mapping[old]] = FileTensor(new_info, entry.file, entry.start, entry.end)
        else:
            out[mapping[old]] = LoadedTensor(new_info, entry.tensor)
    return out


class Checkpoint:
    """A model opened for reading: names, shapes and dtypes now; tensors on demand.

    Use as a context manager or call `close()`; it holds open file descriptors.
    """

    def __init__(
        self,
        path: Path,
        format: str,
        files: list[Path],
        entries: dict[str, Entry],
        *,
        config: dict | None = None,
        metadata: dict[str, str] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.path = path
        self.notes = list(notes or [])  # what a user should know about how it was read
        self.format = format
        self.files = files
        self.config = config
        self.metadata = metadata or {}
        self._entries = entries
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        self._staging = threading.local()
        self._closed = False

    # -- inspection ------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def info(self, name: str) -> TensorInfo:
        return self._entry(name).info

    def infos(self) -> list[TensorInfo]:
        return [e.info for e in self._entries.values()]

    @property
    def num_parameters(self) -> int:
        """Values in the model, tied tensors (names sharing one tensor) counted once, as
        torch and Hugging Face count them."""
        return sum(e.info.numel for e in self._untied())

    def _untied(self) -> list[Entry]:
        """Every tensor once: the first name of each tied group stands for the group."""
        tied = {name for group in self.tied_groups() for name in group[1:]}
        return [e for name, e in self._entries.items() if name not in tied]

    def tied_groups(self) -> list[list[str]]:
        """Names that share one tensor (a language model's embedding and output head in a
        `.pt` file), each group in the file's order. Safetensors files hold no such."""
        seen: dict[tuple, list[str]] = {}
        for name, e in self._entries.items():
            if isinstance(e, LoadedTensor) and e.tensor.numel() > 0:
                t = e.tensor
                key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
                seen.setdefault(key, []).append(name)
        return [names for names in seen.values() if len(names) > 1]

    @property
    def total_bytes(self) -> int:
        """Bytes of tensor data, tied tensors counted once (as they are stored)."""
        return sum(e.info.nbytes for e in self._untied())

    def sha256(self) -> str:
        """SHA-256 over the weight files in order; cached by (path, size, mtime)."""
        from core.checkpoints.hashing import files_sha256

        return files_sha256(self.files)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, format={self.format!r}, tensors={len(self)})"

    # -- reading ---------------------------------------------------------------
    def get(
        self,
        name: str,
        *,
        dtype: torch.dtype | None = None,
        out: torch.Tensor | None = None,
        check: CheckFn | None = None,
    ) -> torch.Tensor:
        """Read one tensor (a private copy), cast to `dtype` if given.

        With `out` (right shape, dtype = `dtype` or the stored one, contiguous, on CPU)
        the bytes land in it, so a caller can reuse pre-faulted buffers. `check` is
        called between chunks of long reads so a cancel takes effect promptly.
        """
        entry = self._entry(name)
        info = entry.info
        target = dtype or info.dtype
        if out is None:
            out = torch.empty(info.shape, dtype=target)
        elif tuple(out.shape) != info.shape or out.dtype != target or not out.is_contiguous():
            raise ValueError(
                f"out for '{name}' must be a contiguous {target} tensor of shape {info.shape}, "
                f"got {out.dtype} {tuple(out.shape)}"
            )
        if isinstance(entry, LoadedTensor):
            out.copy_(entry.tensor)
        elif target == info.dtype:
            self._read_raw(entry, byte_view(out), check)
        else:
            self._read_converting(entry, out, check)
        return out

    def state_dict(self, *, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Every tensor, read into fresh memory (for small models). `dtype` casts floating
        tensors only; integer and bool buffers keep their dtype."""
        result = {}
        for name, entry in self._entries.items():
            cast = dtype if dtype is not None and entry.info.dtype.is_floating_point else None
            result[name] = self.get(name, dtype=cast)
        return result

    # -- lifetime --------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
            self._closed = True
        for fd in fds.values():
            os.close(fd)
        self._entries_loaded_release()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            fds = self._fds
        except AttributeError:
            return
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- internals -------------------------------------------------------------
    def _entries_loaded_release(self) -> None:
        # Drop references to mmapped pickle tensors so their mappings can go.
        for name, entry in list(self._entries.items()):
            if isinstance(entry, LoadedTensor):
                meta = torch.empty(entry.info.shape, dtype=entry.info.dtype, device="meta")
                self._entries[name] = LoadedTensor(entry.info, meta)

    def _entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise CheckpointError(
                "no tensor of that name in this model", file=self.path, tensor=name
            ) from None

    def _fd(self, index: int) -> int:
        with self._lock:
            if self._closed:
                raise ValueError(f"checkpoint {self.path} is closed")
            fd = self._fds.get(index)
            if fd is None:
                path = self.files[index]
                try:
                    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                except OSError as exc:
                    raise CheckpointError(
                        f"cannot open the file any more: {exc.strerror}", file=path
                    ) from None
                if hasattr(os, "posix_fadvise"):  # tensors are read front to back
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                self._fds[index] = fd
            return fd

    def _read_raw(self, entry: FileTensor, dest: memoryview, check: CheckFn | None) -> None:
        fd = self._fd(entry.file)
        done, total = 0, entry.end - entry.start
        while done < total:
            if check is not None:
                check()
            want = min(CHUNK_BYTES, total - done)
            try:
                got = os.preadv(fd, [dest[done : done + want]], entry.start + done)
            except OSError as exc:
                raise CheckpointError(
                    f"reading failed: {exc.strerror}",
                    file=self.files[entry.file],
                    tensor=entry.info.name,
                    hint="check the disk or copy the file again",
                ) from None
            if got == 0:
                raise CheckpointError(
                    f"the file ended after {entry.start + done} bytes, "
                    f"before this tensor's end at {entry.end}",
                    file=self.files[entry.file],
                    tensor=entry.info.name,
                    hint=REDOWNLOAD,
                )
            done += got

    def _read_converting(self, entry: FileTensor, out: torch.Tensor, check: CheckFn | None):
        """Read in bounded chunks through a per-thread staging buffer, casting each."""
        info = entry.info
        flat_out = out.view(-1)
        size = torch.empty((), dtype=info.dtype).element_size()
        staging = self._staging_buffer(info.dtype, min(info.numel, CONVERT_ELEMENTS))
        for first in range(0, info.numel, CONVERT_ELEMENTS):
            count = min(CONVERT_ELEMENTS, info.numel - first)
            part = FileTensor(
                info, entry.file, entry.start + first * size, entry.start + (first + count) * size
            )
            self._read_raw(part, byte_view(staging[:count]), check)
            flat_out[first : first + count].copy_(staging[:count])

    def _staging_buffer(self, dtype: torch.dtype, count: int) -> torch.Tensor:
        buffers: dict[torch.dtype, torch.Tensor] = getattr(self._staging, "buffers", None) or {}
        self._staging.buffers = buffers
        buf = buffers.get(dtype)
        if buf is None or buf.numel() < count:
            buf = buffers[dtype] = torch.empty(count, dtype=dtype)
        return buf
