"""Shared pieces of the bad-input corpus: the `Case` record and byte-level writers.

Everything is written byte by byte (not through our own writer) so the reader is tested
against the file formats themselves, and nothing binary is committed to the repository.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

Kind = Literal["checkpoint", "recipe"]
Expect = Literal["error", "either"]


@dataclass(frozen=True)
class Case:
    """One bad input and what a correct program must do with it.

    kind "checkpoint": `path` is opened, fully read, and merged (linear) with a good model.
    kind "recipe": `path` is a YAML recipe that is loaded and run.
    `mention`: substrings the one-line error must contain (the file, the tensor, the key).
    `expect` "error": only a clean `MergerError` is right; "either": success is fine too.
    `marker`: a file that exists only if a code payload ran.
    `unblock`: called if the case hangs, to release a blocked reader (FIFO).
    """

    id: str
    category: str
    kind: Kind
    path: Path
    mention: tuple[str, ...] = ()
    expect: Expect = "error"
    marker: Path | None = None
    time_limit: float = 20.0
    unblock: Callable[[], None] | None = field(default=None, compare=False)


def good_state() -> dict[str, torch.Tensor]:
    """A tiny MLP-like state dict with an integer buffer, like real checkpoints have."""
    gen = torch.Generator().manual_seed(0)
    return {
        "layers.0.weight": torch.randn(4, 3, generator=gen),
        "layers.0.bias": torch.randn(4, generator=gen),
        "layers.1.weight": torch.randn(2, 4, generator=gen),
        "layers.1.bias": torch.randn(2, generator=gen),
        "steps": torch.tensor(7, dtype=torch.int64),
    }


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Little-endian raw bytes of a tensor, as safetensors stores them."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def raw_safetensors(path: Path, header_text: bytes, data: bytes, *, length: int | None = None):
    """Write length prefix + header bytes + data exactly as given."""
    n = len(header_text) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + header_text + data)
    return path


def header_for(state: dict[str, torch.Tensor]) -> tuple[dict, bytes]:
    """A correct header (as a dict, to be damaged) and the data bytes for `state`."""
    codes = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}
    header: dict = {}
    data = b""
    for name, t in state.items():
        raw = tensor_bytes(t)
        header[name] = {
            "dtype": codes[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    return header, data


def write_header_case(path: Path, mutate: Callable[[dict], object], state=None) -> Path:
    """A safetensors file whose header is `mutate(header)` (or the header changed in place)."""
    header, data = header_for(state or good_state())
    changed = mutate(header)
    doc = header if changed is None else changed
    return raw_safetensors(path, json.dumps(doc).encode(), data)


def good_safetensors(path: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    header, data = header_for(state or good_state())
    return raw_safetensors(path, json.dumps(header).encode(), data)
