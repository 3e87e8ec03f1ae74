"""A labelled data set held in memory as two tensors, served in batches.

Evaluation sets here are small (thousands of examples), so holding them as tensors is
simpler and faster than a DataLoader; the same object feeds evaluation, activation
collection and BatchNorm re-estimation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dataset:
    """Inputs `x` (N, ...) as float32 and integer labels `y` (N,) as int64, or None where
    the data has no labels (enough for activations and BatchNorm, not for evaluation)."""

    x: torch.Tensor
    y: torch.Tensor | None
    name: str
    origin: str = ""  # the file it came from, for messages ("" for built-in data)

    @property
    def where(self) -> str:
        """What messages name: the data file, or the built-in set's name."""
        return self.origin or self.name

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. (64,) for digits."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.y.max().item()) + 1 if len(self) and self.y is not None else 0

    def batches(
        self, batch_size: int = 256, *, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(x, y) pairs in order, the last one possibly shorter; at most `limit` of them
        (y is None for data without labels)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        for count, start in enumerate(range(0, len(self), batch_size)):
            if limit is not None and count >= limit:
                return
            end = start + batch_size
            yield self.x[start:end], None if self.y is None else self.y[start:end]

    def subset(self, index: torch.Tensor, name: str | None = None) -> Dataset:
        """The examples at `index`, as a new data set."""
        y = None if self.y is None else self.y[index]
        return Dataset(self.x[index], y, name or self.name, self.origin)
