"""Linear assignment: one interface over scipy (CPU) and a torch auction (any device).

Weight and activation matching reduce to "pick the permutation that maximizes
Σ_i score[i, perm[i]]". `solve_assignment` answers that with scipy's Jonker-Volgenant
(exact, float64, releases the GIL so a GUI thread stays alive) or, on CUDA, with our
ε-scaling auction (`core.alignment.auction`), which also runs on CPU torch so it is tested.

Warm starts: coordinate descent solves a slowly changing cost matrix again and again.
`solve_assignment_warm` returns column prices (the LP dual of the columns) beside the
permutation; passing them back next time lets scipy start from a matrix that is already
reduced (non-negative, zero on last time's assignment), which cuts its search from
O(n³) towards O(n²) when the optimum moved little. Prices only change speed, never the
answer: reducing rows and columns by constants shifts every permutation's score equally.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from core.errors import MergerError

# Below this size a GPU solve cannot win: the transfer and launches cost more than scipy.
GPU_MIN_SIZE = 2048
_DUAL_REPAIR_ROUNDS = 60


def available_solvers() -> list[str]:
    """Solver names usable on this machine ('auction' runs on CPU torch too)."""
    names = ["scipy", "auction"]
    if torch.cuda.is_available():
        names.append("auction-cuda")
    return names


def pick_solver(n: int, device: str = "auto") -> str:
    """Choose a solver for an n×n problem: the GPU auction only where it can pay."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MergerError(
                "a CUDA assignment solver was asked for but no CUDA device is available",
                hint="use device 'cpu' or 'auto'",
            )
        return "auction-cuda" if n >= GPU_MIN_SIZE else "scipy"
    return "scipy"


def solve_assignment(
    score: torch.Tensor | np.ndarray,
    *,
    maximize: bool = True,
    device: str = "auto",
    warm_start: np.ndarray | None = None,
    solver: str | None = None,
) -> np.ndarray:
    """Return the optimal assignment as int64 `perm`: row i -> column perm[i].

    `score` is (n, m) with n <= m (every row gets a distinct column). `warm_start`, if
    given, is a vector of column prices from `solve_assignment_warm` for a similar
    matrix; it only affects speed. `solver` overrides the automatic choice
    ('scipy', 'auction' on CPU torch, 'auction-cuda').
    """
    perm, _ = solve_assignment_warm(
        score, maximize=maximize, device=device, prices=warm_start, solver=solver
    )
    return perm


def solve_assignment_warm(
    score: torch.Tensor | np.ndarray,
    *,
    maximize: bool = True,
    device: str = "auto",
    prices: np.ndarray | None = None,
    solver: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Like `solve_assignment` but also return column prices for the next warm start.

    Prices are dual values of the columns in the maximization form; they satisfy
    score[i, j] - prices[j] <= score[i, perm[i]] - prices[perm[i]] up to float noise
    (they may be approximate when the repair stopped early; they are only a hint).
    """
    n, m = _check_shape(score)
    name = solver or pick_solver(n, device)
    if name not in ("scipy", "auction", "auction-cuda"):
        raise MergerError(
            f"unknown assignment solver '{name}'; available: {', '.join(available_solvers())}"
        )
    if name == "scipy":
        s = _to_numpy64(score)
        if not maximize:
            s = -s
        return _scipy_warm(s, prices)
    if n != m:
        raise MergerError(
            f"the auction solver needs a square score matrix, got {n}x{m}",
            hint="use solver 'scipy' for rectangular problems",
        )
    from core.alignment.auction import auction_assignment

    dev = "cuda" if name == "auction-cuda" else "cpu"
    t = torch.as_tensor(score).to(device=dev, dtype=torch.float64)
    if not maximize:
        t = -t
    perm, new_prices = auction_assignment(t, prices=prices)
    return perm, new_prices


def _check_shape(score: torch.Tensor | np.ndarray) -> tuple[int, int]:
    shape = tuple(score.shape)
    if len(shape) != 2:
        raise MergerError(f"an assignment score must be a 2-D matrix, got shape {list(shape)}")
    n, m = shape
    if n > m:
        raise MergerError(
            f"an assignment score needs at least as many columns as rows, got {n}x{m}",
            hint="transpose the matrix and invert the result",
        )
    if n == 0:
        raise MergerError("an assignment score must not be empty")
    return n, m


def _to_numpy64(score: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(score, torch.Tensor):
        score = score.detach().to("cpu", torch.float64).numpy()
    s = np.asarray(score, dtype=np.float64)
    if not np.all(np.isfinite(s)):
        raise MergerError(
            "the assignment score contains NaN or infinite values",
            hint="check the models for NaN/inf weights",
        )
    return s


def _scipy_warm(s: np.ndarray, prices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Maximize with scipy on a matrix reduced by `prices`; return perm and new prices."""
    n, m = s.shape
    v = np.zeros(m) if prices is None or len(prices) != m else np.asarray(prices, np.float64)
    # Reduced cost for minimization: u_i + v_j - s_ij >= 0, zero where row i is tight.
    red = s - v[None, :]
    u = red.max(axis=1)
    np.subtract(u[:, None], red, out=red)
    rows, cols = linear_sum_assignment(red)
    perm = np.empty(n, dtype=np.int64)
    perm[rows] = cols
    if n == m:
        v = v - _repair_potentials(red, perm)
    return perm, v


def _repair_potentials(red: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Column potentials d (<= 0) that make `perm` tight on the reduced cost `red`.

    Bellman-Ford on the columns, edge perm[i] -> j of weight red[i, j] - red[i, perm[i]],
    relaxing only columns whose potential just dropped. `perm` is optimal, so there is no
    negative cycle; rounds are capped because the result is only a warm-start hint.
    """
    n = len(perm)
    owner = np.empty(n, dtype=np.int64)
    owner[perm] = np.arange(n)
    d = np.zeros(n)
    slack = red[np.arange(n), perm]
    tol = 1e-12 * max(1.0, float(np.abs(red).max(initial=0.0)))
    active = perm[slack > tol]
    for _ in range(_DUAL_REPAIR_ROUNDS):
        if len(active) == 0:
            break
        rows = owner[active]
        cand = red[rows] + (d[active] - slack[rows])[:, None]
        best = cand.min(axis=0)
        improved = best < d - tol
        d = np.where(improved, best, d)
        active = np.nonzero(improved)[0]
    return d
