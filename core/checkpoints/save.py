"""`save_state_dict`: write a whole in-memory state dict through the streaming writer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from core.checkpoints.tensor_info import TensorInfo
from core.checkpoints.writer import CheckpointWriter


def save_state_dict(
    state: Mapping[str, torch.Tensor],
    out: str | Path,
    *,
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
    shard_size: int | None = None,
    protect: Sequence[str | Path] = (),
    overwrite: bool = False,
    extra_files: Mapping[str, bytes] | None = None,
) -> list[Path]:
    """Write `state` as safetensors at `out` (file or folder), atomically.

    `dtype` converts floating-point tensors only; integer and bool buffers (step counters,
    masks) keep theirs. Returns the published files (see `CheckpointWriter.commit`).
    """

    def target(t: torch.Tensor) -> torch.dtype:
        return dtype if dtype is not None and t.is_floating_point() else t.dtype

    plan = [TensorInfo.of(name, tuple(t.shape), target(t)) for name, t in state.items()]
    with CheckpointWriter(
        out,
        plan,
        metadata=metadata,
        shard_size=shard_size,
        protect=protect,
        overwrite=overwrite,
        extra_files=extra_files,
    ) as writer:
        for info in plan:
            writer.write(info.name, state[info.name].to(info.dtype))
        return writer.commit()
