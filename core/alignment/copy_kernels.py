"""Compiled copies and a float64 dot for weight matching's cost products (CPU).

Between its matrix products, weight matching spends its time rearranging weights: B's
tensors gathered along one axis by a neighbour's permutation, and conv weights turned
so that a group on their input axis gets one row per unit. torch moves a 3×3 kernel's
36-byte runs at 1.5-4 GB/s in both (index_select on a middle axis; a copy through a
transposing view). The loops below fill the destination a block of rows at a time on
every core: alone they take a third of torch's time on a (256, 256, 3, 3) conv, and
about two thirds between torch's matrix products, whose threads keep spinning on the
cores for a while after each one (ResNet-20 ×4 weight matching: 14% faster overall).
Indices are not bounds-checked: callers pass permutations they built.

Every function is a plain copy (or an exact-product float64 sum), so results are bitwise
those of the torch expressions they replace; `available()` says whether numba is there,
and callers keep the torch expression as the fallback (CUDA tensors, no numba).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from core.alignment.solvers import compiled_auction_available

# Destination rows filled per task of the transposing gather: 8 rows of a 3×3 conv are
# 288 contiguous bytes per source row read, and enough tasks remain to share the cores.
_ROW_BLOCK = 8


def available() -> bool:
    """Whether numba is installed (it is a dependency; a stripped install may lack it):
    the same check as the compiled auction's, which needs it too."""
    return compiled_auction_available()


def gather_middle(src: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[x, j, :] = src[x, index[j], :] for contiguous 3-D float32 CPU tensors."""
    _parallel(_kernels().middle, src.numpy(), index.numpy(), out.numpy())
    return out


def gather_transposed(
    src: torch.Tensor, index: torch.Tensor | None, out: torch.Tensor
) -> torch.Tensor:
    """out[y, j, :] = src[index[j], y, :] (index None: the identity), src (X, Y, Z) -> out
    (Y, X', Z), contiguous 3-D float32 CPU tensors."""
    idx = np.arange(src.shape[0]) if index is None else index.numpy()
    _parallel(_kernels().transposed, src.numpy(), idx, out.numpy())
    return out


def dot64(a: torch.Tensor, b: torch.Tensor) -> float:
    """Σ a·b over two contiguous float32 CPU tensors, each product exact in float64 (the
    sum is reordered into vector lanes, as a float64 torch sum is).

    torch's `sum(dtype=torch.float64)` first converts the whole tensor to a new float64
    copy; this reads both in place."""
    return float(_kernels().dot(a.reshape(-1).numpy(), b.reshape(-1).numpy()))


def warm_up() -> None:
    """Compile (first run on a machine) or load the kernels from numba's disk cache."""
    if available():
        x = torch.zeros(2, 2, 2)
        gather_middle(x, torch.arange(2), torch.empty(2, 2, 2))
        gather_transposed(x, None, torch.empty(2, 2, 2))
        dot64(x, x)


class _Kernels(NamedTuple):
    middle: Callable[..., None]
    transposed: Callable[..., None]
    dot: Callable[..., float]


_COMPILED: _Kernels | None = None
# numba's fallback threading layer ("workqueue", where neither OpenMP nor TBB is
# installed, as on many macOS machines) aborts the process when two threads enter
# parallel kernels at once: the app warms them up on one thread while a job may start
# on another.
_PARALLEL = threading.Lock()


def _parallel(kernel: Callable[..., None], *args: object) -> None:
    """Run a parallel kernel alone, on as many threads as torch may use (the app's
    CPU-threads setting is torch's)."""
    import numba

    with _PARALLEL:
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        kernel(*args)


def _kernels() -> _Kernels:
    """The compiled functions, built on first use (importing numba costs ~0.3 s)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = _compile()
    return _COMPILED


def _compile() -> _Kernels:
    from numba import njit, prange

    @njit(parallel=True, nogil=True, cache=True)
    def middle(src, index, out):  # pragma: no cover - compiled
        rows, n, run = out.shape
        for x in prange(rows):
            for j in range(n):
                r = index[j]
                for c in range(run):
                    out[x, j, c] = src[x, r, c]

    @njit(parallel=True, nogil=True, cache=True)
    def transposed(src, index, out):  # pragma: no cover - compiled
        ys, n, run = out.shape
        for block in prange((n + _ROW_BLOCK - 1) // _ROW_BLOCK):
            lo = block * _ROW_BLOCK
            hi = min(n, lo + _ROW_BLOCK)
            for y in range(ys):
                for j in range(lo, hi):
                    r = index[j]
                    for c in range(run):
                        out[y, j, c] = src[r, y, c]

    @njit(nogil=True, cache=True, fastmath={"reassoc"})
    def dot(a, b):  # pragma: no cover - compiled
        total = 0.0
        for i in range(a.shape[0]):
            total += np.float64(a[i]) * np.float64(b[i])
        return total

    return _Kernels(middle, transposed, dot)
