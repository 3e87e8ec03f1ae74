"""What a method sees besides tensors: the tensor's name and its own random stream."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class TensorContext:
    """Per-tensor context handed to tensorwise methods.

    Random draws come from `generator(i)`: a stream seeded from the recipe's seed,
    the tensor's name and the input index, so a merge is reproducible whatever the
    order or threading in which tensors are processed.
    """

    name: str
    seed: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    # Progress within this tensor (fraction done) and a cancellation point, for methods
    # that take long on one large tensor; None where nobody listens.
    tick: Callable[[float], None] | None = None

    def generator(self, index: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
        key = zlib.crc32(f"{self.seed}:{index}:{self.name}".encode())
        return torch.Generator(device=device).manual_seed(key)


@dataclass(frozen=True)
class PrepareContext:
    """What a tensorwise method's `prepare` sees before the merge streams: the
    parameters for the whole model, and passes over the task vectors.

    `task_vectors(label)` reads every floating-point tensor once more and yields, tensor
    by tensor, θᵢ − θ₀ in float32 for each input model (progress says `label`).
    `varies(name)` tells whether a parameter takes a value per tensor or layer.
    `check()` raises `Cancelled` once the job is cancelled: call it while working through
    one large tensor."""

    params: dict[str, Any]
    model_params: list[dict[str, Any]]
    varies: Callable[[str], bool]
    task_vectors: Callable[[str], Iterator[list[torch.Tensor]]]
    check: Callable[[], None] = lambda: None
