"""Will a merge fit in memory? Estimate before starting, refuse with the numbers.

A merge that runs out of memory half-way wastes the user's time and may take the whole
desktop down with it (the OOM killer picks the biggest process). The estimate follows
how the engine actually holds tensors:

* tensorwise methods stream (`core.streaming`): at any moment one output tensor's inputs
  are being computed on, `prefetch` more tensors are being read ahead, and up to two
  results wait in the write queue, so the peak is ~ (n_inputs + prefetch + 3) tensors of
  the largest name, in the compute dtype;
* model-level methods (alignment, ...) load every model whole and build new state
  dicts from them, so about twice all models in the compute dtype.

A GPU that runs out of memory is not fatal: `run_on_device` retries on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, TypeVar

import psutil
import torch

from core.checkpoints.tensor_info import TensorInfo, itemsize
from core.errors import ResourceError

MethodKind = Literal["tensorwise", "model"]
T = TypeVar("T")

GB = 1e9
HEADROOM = 0.9  # never plan to use the last 10% of free memory: the OS and the GUI need it
FIXED_OVERHEAD = 64 << 20  # allocator slack, thread stacks, pool bookkeeping


def _bytes_in(info: TensorInfo, compute_dtype: torch.dtype) -> int:
    """Bytes of `info` once read: floats in the compute dtype, others as stored."""
    dtype = compute_dtype if info.dtype.is_floating_point else info.dtype
    return info.numel * itemsize(dtype)


def estimate_merge_memory(
    models: Sequence[Sequence[TensorInfo]],
    kind: MethodKind,
    *,
    compute_dtype: torch.dtype = torch.float32,
    prefetch: int = 2,
) -> int:
    """Peak extra memory (bytes) a merge of `models` (base included) needs beyond torch.

    `models` holds each checkpoint's TensorInfos (`Checkpoint.infos()`), headers only.
    """
    if not models:
        return 0
    if kind == "model":
        total = sum(_bytes_in(i, compute_dtype) for infos in models for i in infos)
        return 2 * total + FIXED_OVERHEAD
    per_name: dict[str, int] = {}
    largest = 0
    for infos in models:
        for info in infos:
            size = _bytes_in(info, compute_dtype)
            per_name[info.name] = per_name.get(info.name, 0) + size
            largest = max(largest, size)
    largest_item = max(per_name.values(), default=0)
    # the item being computed + tensors read ahead + its result + two queued for writing
    return largest_item + (prefetch + 3) * largest + FIXED_OVERHEAD


def available_memory() -> int:
    """Memory the system can give now without swapping (bytes)."""
    return int(psutil.virtual_memory().available)


def check_memory(needed: int, available: int | None = None, *, what: str = "this merge") -> None:
    """Raise ResourceError, with both numbers and what to do, if `needed` cannot fit."""
    free = available_memory() if available is None else int(available)
    if needed <= free * HEADROOM:
        return
    raise ResourceError(
        f"{what} needs ~{needed / GB:.1f} GB of memory, {free / GB:.1f} GB free",
        hint="close other programs or use a smaller dtype (e.g. dtype: bfloat16)",
    )


def check_merge_memory(
    models: Sequence[Sequence[TensorInfo]],
    kind: MethodKind,
    *,
    compute_dtype: torch.dtype = torch.float32,
    available: int | None = None,
) -> int:
    """Estimate and check in one call; returns the estimate. Call before any tensor loads."""
    needed = estimate_merge_memory(models, kind, compute_dtype=compute_dtype)
    check_memory(needed, available)
    return needed


class _Logs(Protocol):
    """Anything with `log(str)`: a `Progress`, or a test's recorder."""

    def log(self, message: str) -> None: ...


def run_on_device(
    fn: Callable[[str], T],
    device: str,
    progress: _Logs | None = None,
    *,
    on_fallback: Callable[[], None] | None = None,
) -> T:
    """Call `fn(device)`; if the GPU runs out of memory, say so and call `fn("cpu")`.

    `fn` must not keep partial results between attempts (it is started afresh).
    `on_fallback` may release what the failed attempt left on the GPU.
    """
    try:
        return fn(device)
    except torch.cuda.OutOfMemoryError as exc:
        if device == "cpu":
            raise ResourceError(
                f"out of memory on the CPU: {_first_line(exc)}",
                hint="close other programs or use a smaller dtype",
            ) from None
        first = _first_line(exc)
    # outside the except block, so the traceback (and its GPU tensors) can be freed
    if on_fallback is not None:
        on_fallback()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if progress is not None:
        progress.log(f"the GPU ({device}) ran out of memory ({first}); continuing on the CPU")
    return fn("cpu")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def infos_by_model(checkpoints: Sequence[object]) -> list[list[TensorInfo]]:
    """`[ckpt.infos() for ckpt in checkpoints]`, for callers holding Checkpoint objects."""
    return [list(c.infos()) for c in checkpoints]  # type: ignore[attr-defined]


__all__ = [
    "available_memory",
    "check_memory",
    "check_merge_memory",
    "estimate_merge_memory",
    "infos_by_model",
    "run_on_device",
]
