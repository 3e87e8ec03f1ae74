"""`CheckpointWriter`: stream tensors into safetensors files, atomically.

The plan (names, shapes, dtypes) is known before the first tensor, so each file's header
is written first and every tensor's bytes go straight from its memory to the file: no
whole shard is ever held in RAM (mergekit's writer holds a shard plus a bytes copy of
it). The header is padded with spaces so metadata added later (`set_metadata`) can be
written over it in place; if it outgrows the room, the data is moved once at commit.
Bytes go out through `FileSink` (direct I/O where possible, see file_sink.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from core.checkpoints.file_sink import ALIGN, FaultHook, FileSink
from core.checkpoints.output_paths import (
    check_output_path,
    fsync_dir,
    make_parent,
    output_error,
    publish,
    remove_empty,
    remove_stale_temps,
    temp_name,
)
from core.checkpoints.safetensors_format import build_header
from core.checkpoints.shards import Shard, split_plan
from core.checkpoints.tensor_info import TensorInfo, dtype_code
from core.errors import OutputError

CHUNK_BYTES = 64 << 20
INDEX_NAME = "model.safetensors.index.json"


class CheckpointWriter:
    """Writes the tensors of `plan`, in plan order, to `out` (a .safetensors file or a
    folder), publishing them only at `commit()`.

    As a context manager it aborts (removes every temporary file) on an exception and on
    exit without commit. `fault_hook(path, offset)`, if set, is called before each write
    and may raise OSError; tests use it to simulate a full disk.
    """

    def __init__(
        self,
        out: str | Path,
        plan: Sequence[TensorInfo],
        *,
        metadata: dict[str, str] | None = None,
        shard_size: int | None = None,
        protect: Sequence[str | Path] = (),
        overwrite: bool = False,
        extra_files: Mapping[str, bytes] | None = None,
    ) -> None:
        self.out = Path(out).expanduser()
        self.plan = list(plan)
        self.metadata = {"format": "pt", **_checked_metadata(metadata or {})}
        self.overwrite = overwrite
        self.fault_hook: FaultHook | None = None
        self._single = self.out.name.endswith(".safetensors")
        self._extra = dict(extra_files or {})
        self._next = 0
        self._done = False  # committed or aborted
        self._sink: FileSink | None = None
        _check_plan(self.plan)
        self.shards = split_plan(self.plan, shard_size, single=self._single)
        if self._single and len(self.shards) > 1:
            raise OutputError(
                f"the output needs {len(self.shards)} shards of at most {shard_size} bytes, "
                "but a .safetensors name means one file",
                file=self.out,
                hint="give a folder name as output to write a sharded model",
            )
        if self._single and self._extra:
            raise ValueError("extra_files need a folder output, not a .safetensors file")
        _check_extra_names(self._extra, self.shards)
        check_output_path(self.out, protect, overwrite=overwrite)
        self._created = make_parent(self.out)
        remove_stale_temps(self.out)
        self._tmp = temp_name(self.out)
        try:
            if not self._single:
                self._tmp.mkdir()
        except OSError as exc:
            remove_empty(self._created)
            raise output_error(self.out, exc, "creating") from None
        self._shard_index = 0
        self._wrapped(self._open_shard, 0)

    # -- public API ------------------------------------------------------------
    def write(self, name: str, tensor: torch.Tensor, *, check: Callable[[], None] | None = None):
        """Append the next tensor of the plan; its name, shape and dtype must match."""
        if self._done:
            raise RuntimeError("the writer is already committed or aborted")
        if self._next >= len(self.plan):
            raise ValueError(f"'{name}' was written after every planned tensor")
        info = self.plan[self._next]
        if name != info.name:
            raise ValueError(f"expected tensor '{info.name}' next in the plan, got '{name}'")
        if tuple(tensor.shape) != info.shape or tensor.dtype != info.dtype:
            raise ValueError(
                f"tensor '{name}' is {tensor.dtype} {tuple(tensor.shape)}, "
                f"the plan says {info.dtype} {info.shape}"
            )
        data = tensor.detach()
        if data.device.type != "cpu":
            data = data.cpu()
        data = data.contiguous()
        self._wrapped(self._write_tensor, data, check)
        self._next += 1

    def set_metadata(self, key: str, value: str) -> None:
        """Add or change one metadata entry; allowed until commit."""
        if self._done:
            raise RuntimeError("metadata can only change before commit")
        self.metadata.update(_checked_metadata({key: value}))

    def commit(self) -> list[Path]:
        """Finish every file, make it durable and publish it under its real name.

        Returns the published paths: weight files first, then the index and extra files.
        """
        if self._done:
            raise RuntimeError("the writer is already committed or aborted")
        if self._next != len(self.plan):
            missing = self.plan[self._next].name
            self.abort()
            raise ValueError(f"commit before all tensors were written (next: '{missing}')")
        try:
            self._wrapped(self._finish_files)
            carried = publish(self._tmp, self.out, overwrite=self.overwrite)
        except OutputError:
            self.abort()
            raise
        except OSError as exc:
            self.abort()
            raise output_error(self.out, exc, "publishing") from None
        except BaseException:
            self.abort()
            raise
        self._done = True
        if self._single:
            return [self.out]
        names = [s.name for s in self.shards]
        if len(self.shards) > 1:
            names.append(INDEX_NAME)
        return [self.out / n for n in [*names, *self._extra]] + carried

    def abort(self) -> None:
        """Remove every temporary file and folder; safe to call many times."""
        if self._done:
            return
        self._done = True
        if self._sink is not None:
            self._sink.abort()
            self._sink = None
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        remove_empty(getattr(self, "_created", []))

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # a no-op after commit

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.abort()

    # -- internals -------------------------------------------------------------
    def _wrapped(self, fn, *args):
        """Run `fn`; on OSError remove the temporary files and raise an OutputError."""
        try:
            return fn(*args)
        except OSError as exc:
            self.abort()
            raise output_error(self.out, exc) from None
        except BaseException:
            self.abort()
            raise

    def _shard_path(self, shard: Shard) -> Path:
        return self._tmp if self._single else self._tmp / shard.name

    def _open_shard(self, index: int) -> None:
        shard = self.shards[index]
        shard.header_size = _reserved_header_size(shard.plan, self.metadata)
        header = build_header(shard.plan, self.metadata, size=shard.header_size)
        self._sink = FileSink(self._shard_path(shard), header, fault_hook=self.fault_hook)
        self._shard_index = index

    def _write_tensor(self, data: torch.Tensor, check) -> None:
        if self._next >= self.shards[self._shard_index].stop:  # starts the next shard
            self._close_sink()
            self._open_shard(self._shard_index + 1)
        assert self._sink is not None
        self._sink.fault_hook = self.fault_hook
        self._sink.append(data, check)

    def _close_sink(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()

    def _finish_files(self) -> None:
        self._close_sink()
        for shard in self.shards:
            path = self._shard_path(shard)
            size = _reserved_header_size(shard.plan, self.metadata, reserve=False)
            if size > shard.header_size:
                _relocate(path, shard, self.metadata)
            else:
                header = build_header(shard.plan, self.metadata, size=shard.header_size)
                _rewrite_and_sync(path, header)
        if not self._single:
            extra = dict(self._extra)
            if len(self.shards) > 1:
                extra[INDEX_NAME] = _index_json(self.shards, self.metadata)
            for name, content in extra.items():
                _write_small_file(self._tmp / name, content)
            fsync_dir(self._tmp)


def _checked_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"safetensors metadata must map str to str, got {k!r}: {v!r}")
    return dict(metadata)


def _check_plan(plan: Sequence[TensorInfo]) -> None:
    seen: set[str] = set()
    for info in plan:
        if info.name in seen:
            raise ValueError(f"tensor '{info.name}' appears twice in the plan")
        if info.name == "__metadata__":
            raise ValueError("'__metadata__' is reserved by the safetensors format")
        seen.add(info.name)
        dtype_code(info.dtype)


def _check_extra_names(extra: Mapping[str, bytes], shards: Sequence[Shard]) -> None:
    reserved = {s.name for s in shards} | {INDEX_NAME}
    for name in extra:
        if not name or "/" in name or "\\" in name or name in (".", "..") or name in reserved:
            raise ValueError(f"extra file name {name!r} is not a plain, free file name")


def _reserved_header_size(
    plan: Sequence[TensorInfo], metadata: Mapping[str, str], *, reserve: bool = True
) -> int:
    exact = len(build_header(plan, metadata))
    room = max(4096, exact // 8) if reserve else 0
    size = exact + room
    return size + (-size % ALIGN)  # block-aligned data start, for direct I/O


def _rewrite_and_sync(path: Path, header: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, header, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _relocate(path: Path, shard: Shard, metadata: Mapping[str, str]) -> None:
    """The final header no longer fits its reserved room: copy the data after a new one."""
    header = build_header(shard.plan, metadata)
    moved = path.with_name(path.name + ".moving")
    with open(path, "rb") as src, open(moved, "wb") as dst:
        dst.write(header)
        src.seek(shard.header_size)
        shutil.copyfileobj(src, dst, CHUNK_BYTES)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(moved, path)
    shard.header_size = len(header)


def _write_small_file(path: Path, content: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())


def _index_json(shards: Sequence[Shard], metadata: Mapping[str, str]) -> bytes:
    weight_map = {info.name: s.name for s in shards for info in s.plan}
    total = sum(info.nbytes for s in shards for info in s.plan)
    doc = {"metadata": {"total_size": total, **metadata}, "weight_map": weight_map}
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
