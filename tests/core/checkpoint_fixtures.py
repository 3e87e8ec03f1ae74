"""Helpers for the checkpoint tests: hand-made safetensors files, good and damaged.

`raw_safetensors` writes the bytes of the format directly (not through our writer), so
the reader is tested against the format itself rather than against our own writer.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch


def raw_safetensors(
    path: Path,
    header: dict,
    data: bytes,
    *,
    length: int | None = None,
    pad_to: int | None = None,
) -> Path:
    """Write `length`(or the true one) + JSON `header` + `data` to `path`."""
    body = json.dumps(header).encode()
    if pad_to is not None:
        body += b" " * (pad_to - len(body))
    n = len(body) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + body + data)
    return path


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Little-endian raw bytes of a tensor, as safetensors stores them."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def good_file(path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A valid two-tensor file built by hand; returns it and the tensors it holds."""
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    b = torch.tensor([1, -2], dtype=torch.int64)
    header = {
        "__metadata__": {"origin": "hand-made"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]},
    }
    return raw_safetensors(path, header, tensor_bytes(a) + tensor_bytes(b)), {"a": a, "b": b}


def files_under(folder: Path) -> list[str]:
    """Every path under `folder`, hidden ones included, relative and sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
