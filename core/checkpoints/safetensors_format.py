"""Our own parser, validator and builder for the safetensors header.

We parse the header ourselves (instead of `safetensors.safe_open`) for two reasons: every
way a file can be damaged gets a message that names the file and the tensor and says
what to do, and the reader can then fetch tensor bytes with `os.preadv` straight into
reusable buffers. Layout: 8-byte little-endian header length N, N bytes of JSON
(`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`, padded
with spaces), then the data; offsets are relative to the start of the data.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.checkpoints.sniff import sniff_hint
from core.checkpoints.tensor_info import SAFETENSORS_DTYPES, TensorInfo, dtype_code
from core.errors import CheckpointError

MAX_HEADER_BYTES = 100_000_000  # the limit of the reference implementation
MAX_DIMS = 64
MAX_ELEMENTS = 2**48  # far beyond any real tensor, far below what overflows torch.empty
REDOWNLOAD = "the file is truncated or corrupt; re-download or re-export it"


@dataclass(frozen=True)
class StoredTensor:
    """A tensor's description plus where its bytes lie in the file (absolute offsets)."""

    info: TensorInfo
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed, validated header of one safetensors file; tensors in file order."""

    tensors: list[StoredTensor]
    metadata: dict[str, str]
    data_start: int


def _bad(path: Path, message: str, tensor: str | None = None, hint: str = REDOWNLOAD):
    return CheckpointError(message, file=path, tensor=tensor, hint=hint)


def read_header(path: Path, file_size: int, raw: bytes) -> SafetensorsHeader:
    """Parse and validate a header. `raw` holds at least the first 8 + N bytes of the file.

    Callers read the length first (`header_length`), then the JSON, then call this.
    """
    n = header_length(path, file_size, raw[:8])
    text = raw[8 : 8 + n]
    try:
        doc = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, absurd nesting or ints
        raise _bad(path, f"the safetensors header is not valid JSON ({_short(exc)})") from None
    if not isinstance(doc, dict):
        raise _bad(path, "the safetensors header is not a JSON object")
    metadata = _parse_metadata(path, doc.pop("__metadata__", None))
    data_start = 8 + n
    data_size = file_size - data_start
    tensors = [
        _parse_entry(path, name, entry, data_start, data_size) for name, entry in doc.items()
    ]
    tensors.sort(key=lambda t: (t.start, t.end))
    _check_overlaps(path, tensors)
    return SafetensorsHeader(tensors, metadata, data_start)


def header_length(path: Path, file_size: int, first8: bytes) -> int:
    """Validate the 8-byte length prefix against the file size and return it."""
    if file_size == 0:
        raise _bad(path, "the file is empty", hint="re-download or re-export it")
    if file_size < 8 or len(first8) < 8:
        raise _bad(path, f"the file is only {file_size} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", first8)
    if n > MAX_HEADER_BYTES:
        raise _bad(
            path,
            f"the header claims {n} bytes, more than any real safetensors header: "
            "this is not a safetensors file",
            hint=sniff_hint(path)
            or "check that the file is the model you meant; if it is, re-download or re-export it",
        )
    if 8 + n > file_size:
        raise _bad(path, f"the header claims {n} bytes but the file has only {file_size - 8}")
    return n


def _short(exc: BaseException) -> str:
    return str(exc)[:120] or type(exc).__name__


def _parse_metadata(path: Path, meta: object) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise _bad(path, "the header's __metadata__ is not a JSON object")
    # The format says string values; tolerate other JSON values by showing them as text.
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def _parse_entry(
    path: Path, name: str, entry: object, data_start: int, data_size: int
) -> StoredTensor:
    if not isinstance(entry, dict):
        raise _bad(path, "the header entry is not a JSON object", name)
    code = entry.get("dtype")
    if not isinstance(code, str) or code not in SAFETENSORS_DTYPES:
        known = ", ".join(SAFETENSORS_DTYPES)
        raise _bad(
            path,
            f"unknown dtype {code!r} (known: {known})",
            name,
            hint="the file may come from a newer tool; convert it to a supported dtype",
        )
    dtype = SAFETENSORS_DTYPES[code]
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise _bad(path, f"the shape {shape!r} is not a list of at most {MAX_DIMS} sizes", name)
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise _bad(
                path, f"the shape {shape} has a size that is not a non-negative integer", name
            )
    if math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS:
        raise _bad(path, f"the shape {shape} is absurdly large", name)
    info = TensorInfo.of(name, tuple(shape), dtype)
    if info.nbytes > data_size and math.prod(shape) > 0:
        raise _bad(
            path,
            f"shape {tuple(shape)} of {code} needs {info.nbytes} bytes, "
            f"more than the file's {data_size} bytes of data",
            name,
        )
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise _bad(path, f"data_offsets {offsets!r} is not a pair of integers", name)
    begin, end = offsets
    if begin < 0 or end < begin:
        raise _bad(path, f"data_offsets {offsets} are negative or reversed", name)
    if end - begin != info.nbytes:
        raise _bad(
            path,
            f"data_offsets {offsets} span {end - begin} bytes but shape {tuple(shape)} "
            f"of {code} needs {info.nbytes}",
            name,
        )
    if end > data_size:
        raise _bad(
            path,
            f"the tensor's bytes end at {end} but the file holds only {data_size} bytes of data",
            name,
        )
    return StoredTensor(info, data_start + begin, data_start + end)


def _check_overlaps(path: Path, tensors: Sequence[StoredTensor]) -> None:
    for prev, cur in zip(tensors, tensors[1:], strict=False):
        if cur.start < prev.end:
            raise _bad(
                path,
                f"its bytes overlap those of tensor '{prev.info.name}'",
                cur.info.name,
            )


def build_header(
    plan: Sequence[TensorInfo], metadata: Mapping[str, str], *, size: int | None = None
) -> bytes:
    """Serialise a header (length prefix included) for tensors stored back to back in plan
    order. Padded with spaces to `size` total bytes if given (ValueError if it does not
    fit), else to a multiple of 8 so the data starts aligned."""
    doc: dict[str, object] = {}
    if metadata:
        doc["__metadata__"] = dict(metadata)
    offset = 0
    for info in plan:
        doc[info.name] = {
            "dtype": dtype_code(info.dtype),
            "shape": list(info.shape),
            "data_offsets": [offset, offset + info.nbytes],
        }
        offset += info.nbytes
    body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if size is None:
        size = 8 + len(body) + (-(8 + len(body)) % 8)
    if 8 + len(body) > size:
        raise ValueError(f"header of {8 + len(body)} bytes does not fit in {size}")
    body += b" " * (size - 8 - len(body))
    return struct.pack("<Q", len(body)) + body
