"""Checks on warm starts handed to the assignment solvers (numpy only, no numba).

A warm start (column prices and the previous permutation) only changes a solver's speed,
so one that cannot be trusted is dropped, never repaired. Shared by the compiled auction
(`auction_lap`) and the torch auction (`solvers.auction_assignment`).
"""

from __future__ import annotations

import numpy as np

# Prices spread over more score spans than this come from a matrix of another scale: a warm
# start from them costs more bids than a cold one. (A chain of warm solves drifts to a few.)
MAX_PRICE_SPREAD = 64.0


def usable_prices(
    prices: np.ndarray | None, n: int, span: float | None = None
) -> np.ndarray | None:
    """`prices` shifted to start at 0, or None when they are unusable.

    The shift matters: a large common offset eats the float64 precision that reduced
    costs need, and it changes nothing else (prices are defined up to a constant).
    Unusable: missing, wrong length, non-finite, or (when `span` is given) spread over
    more than MAX_PRICE_SPREAD spans."""
    if prices is None:
        return None
    price = np.asarray(prices, dtype=np.float64).ravel()
    if len(price) != n or not np.all(np.isfinite(price)):
        return None
    price = price - price.min()
    if span is not None and price.max() > MAX_PRICE_SPREAD * span:
        return None
    return price


def as_permutation(perm: np.ndarray | None, n: int) -> np.ndarray | None:
    """`perm` as int64 when it is a permutation of range(n), else None."""
    if perm is None:
        return None
    p = np.asarray(perm).ravel()
    if len(p) != n or not np.issubdtype(p.dtype, np.integer):
        return None
    p = p.astype(np.int64)
    return p if np.array_equal(np.sort(p), np.arange(n)) else None
