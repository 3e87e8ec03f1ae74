"""Splitting a planned output into shard files, and reading user-given sizes.

Shards follow the Hugging Face layout: `model.safetensors` when one file suffices, else
`model-00001-of-0000N.safetensors` plus an index. A new shard starts when the next tensor
would push the current one past `shard_size`; a tensor larger than that gets a shard to
itself (tensors are never split).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.checkpoints.tensor_info import TensorInfo
from core.errors import RecipeError


@dataclass
class Shard:
    """One output file: its final name and the slice [start, stop) of the plan it holds."""

    name: str
    plan: list[TensorInfo]
    start: int
    stop: int
    header_size: int = field(default=0)


def split_plan(
    plan: Sequence[TensorInfo], shard_size: int | None, *, single: bool = False
) -> list[Shard]:
    """Group the plan into shards of at most `shard_size` bytes of tensor data."""
    if shard_size is not None and shard_size <= 0:
        raise RecipeError(f"the shard size must be positive, got {shard_size}")
    groups: list[tuple[int, int]] = []
    start, size = 0, 0
    for i, info in enumerate(plan):
        if shard_size is not None and i > start and size + info.nbytes > shard_size:
            groups.append((start, i))
            start, size = i, 0
        size += info.nbytes
    groups.append((start, len(plan)))
    n = len(groups)
    shards = []
    for k, (a, b) in enumerate(groups, 1):
        name = "model.safetensors" if n == 1 else f"model-{k:05d}-of-{n:05d}.safetensors"
        shards.append(Shard(name, list(plan[a:b]), a, b))
    return shards


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str | int) -> int:
    """Bytes from a size such as "5GB", "500M", "1.5G", "2GiB" or "1000000".

    K/M/G/T are powers of 1000 (as Hugging Face's `max_shard_size`); KiB/MiB/GiB/TiB are
    powers of 1024. A trailing "B" means bytes.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise RecipeError(
                f"cannot read the size {text!r}", hint='write it like "5GB", "500MB" or "2GiB"'
            )
        number, unit, binary, _ = m.groups()
        if binary and not unit:
            raise RecipeError(f"cannot read the size {text!r}", hint='write it like "2GiB"')
        base = 1024 if binary else 1000
        value = int(float(number) * base ** _POWERS[unit.lower()])
    if value <= 0:
        raise RecipeError(f"the size {text!r} must be more than 0 bytes")
    return value
