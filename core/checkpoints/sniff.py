"""What a file's first bytes say it is, for errors about a file named for another format
(a `.pt` renamed `.safetensors`): the extension picks the reader, the bytes the advice."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

# (magic at offset 0, what it is, the extension that reads it, or "" if none does)
_MAGICS = (
    (b"PK\x03\x04", "a zip-format PyTorch checkpoint", ".pt"),
    (b"\x80\x02\x8a\x0a", "a legacy-format PyTorch checkpoint", ".pt"),
    (b"GGUF", "a llama.cpp GGUF file", ""),
    (b"\x89HDF", "a Keras HDF5 file", ""),
    (b"\x93NUMPY", "a NumPy array file", ""),
)


def sniff(path: Path) -> tuple[str, str] | None:
    """(what the file is, the extension Merger reads it under; "" if it cannot), or None
    when the first bytes are not recognised."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") and _is_npz(path):
        return "a NumPy .npz archive", ""
    for magic, what, suffix in _MAGICS:
        if head.startswith(magic):
            return what, suffix
    if len(head) > 8 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= 100_000_000:
            return "a safetensors file", ".safetensors"
    return None


def _is_npz(path: Path) -> bool:
    """A zip of .npy arrays (numpy.savez), not torch.save's zip (a data.pkl inside)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def sniff_hint(path: Path) -> str | None:
    """'it is X: rename it Y' when the bytes name another format than the extension."""
    found = sniff(path)
    if found is None:
        return None
    what, suffix = found
    if suffix and path.suffix.lower() != suffix:
        return f"the file is {what}: rename it to end in {suffix}"
    if not suffix:
        return f"the file is {what}, which Merger does not read"
    return None
