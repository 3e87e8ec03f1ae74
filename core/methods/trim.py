"""TIES's model-wide trim: one magnitude threshold per task vector, over every tensor.

The TIES reference code flattens each fine-tuned model's whole task vector and keeps its
top-k% magnitudes; mergekit (and our default) keeps the top-k% of each tensor. Over a
whole model that is a selection among billions of values, which must stream like the
merge itself. An exact radix select does it in two passes over the task vectors:

1. count the magnitudes by the high 16 bits of their float32 pattern (non-negative
   floats order like their bit patterns), which finds the bucket holding the r-th
   largest value and how many values lie above it;
2. count the values of that bucket by their low 16 bits, which gives the r-th
   largest value itself.

Entries whose magnitude is at least the threshold are kept. That keeps exactly
⌊n·density⌋ entries unless values tie at the threshold (then all tied entries stay).
The reference code's `kthvalue(n − ⌊n·density⌋)` keeps one entry more; at the sizes
where a model-wide trim matters the difference is one value in millions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

_HIGH = 1 << 15  # high halves of non-negative float32 patterns (sign bit clear)
_LOW = 1 << 16


def magnitude_thresholds(
    passes: Callable[[str], Iterable[Sequence[torch.Tensor]]], densities: Sequence[float]
) -> list[float]:
    """Per model, the magnitude at or above which its task-vector entries are kept.

    `passes(label)` starts one pass over the task vectors and yields, tensor by tensor,
    one tensor per model (θᵢ − θ₀). A density of 1 or more keeps everything (threshold
    0); one that keeps no entry at all gives +inf.
    """
    m = len(densities)
    high = [torch.zeros(_HIGH, dtype=torch.int64) for _ in range(m)]
    total = 0
    for deltas in passes("counting magnitudes (pass 1 of 2)"):
        total += deltas[0].numel()
        for i, delta in enumerate(deltas):
            high[i] += torch.bincount(_patterns(delta) >> 16, minlength=_HIGH)
    ranks = [int(total * d) for d in densities]  # keep the r largest: r-th is the threshold
    buckets = [_bucket(h, r) if 0 < r < total else None for h, r in zip(high, ranks, strict=True)]
    low = [torch.zeros(_LOW, dtype=torch.int64) for _ in range(m)]
    if any(b is not None for b in buckets):
        for deltas in passes("finding the thresholds (pass 2 of 2)"):
            for i, delta in enumerate(deltas):
                if buckets[i] is None:
                    continue
                bits = _patterns(delta)
                inside = bits[(bits >> 16) == buckets[i][0]]
                low[i] += torch.bincount(inside & (_LOW - 1), minlength=_LOW)
    out = []
    for i, r in enumerate(ranks):
        if r >= total:
            out.append(0.0)
        elif r <= 0:
            out.append(float("inf"))
        else:
            bucket, above = buckets[i]
            low_bits, _ = _bucket(low[i], r - above)
            out.append(_as_float((bucket << 16) | low_bits))
    return out


def _patterns(delta: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns of |delta| as int64 (ordered like the magnitudes)."""
    return delta.detach().float().abs().flatten().view(torch.int32).to(torch.int64)


def _bucket(counts: torch.Tensor, rank: int) -> tuple[int, int]:
    """The bucket holding the `rank`-th largest value, and how many values lie above it."""
    above = torch.cumsum(counts.flip(0), 0)  # above[j]: values in the top j+1 buckets
    j = int(torch.searchsorted(above, torch.tensor(rank), right=False))
    bucket = len(counts) - 1 - j
    return bucket, int(above[j - 1]) if j > 0 else 0


def _as_float(pattern: int) -> float:
    return float(torch.tensor([pattern], dtype=torch.int32).view(torch.float32)[0])
