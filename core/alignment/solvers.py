"""Linear assignment: one interface over scipy, a compiled CPU auction and a torch auction.

Weight and activation matching reduce to "pick the permutation that maximizes
Σ_i score[i, perm[i]]". `solve_assignment` answers that exactly with one of:

* 'auction' (default on the CPU): our numba-compiled auction with an exact shortest-path
  finish (`auction_lap`), 6-27× faster than scipy on weight-matching costs and
  warm-startable. Needs numba; without it the default falls back to scipy.
* 'scipy': scipy's Jonker-Volgenant, the reference (also used for rectangular problems).
* 'auction-cuda' (default on CUDA from GPU_MIN_SIZE): our ε-scaling auction in torch
  (`auction_assignment`); 'auction-torch' runs the same code on the CPU, so it is tested.

All of them release the GIL while they work, so a GUI thread stays alive.
`WarmAssignment` solves a sequence of similar problems (one group across weight-matching
sweeps), starting each solve from the last one's prices.

Warm starts: coordinate descent solves a slowly changing cost matrix again and again.
`solve_assignment_warm` returns column prices (the LP dual of the columns) beside the
permutation; passing them back next time lets scipy start from a matrix that is already
reduced (non-negative, zero on last time's assignment), which cuts its search from
O(n³) towards O(n²) when the optimum moved little. Prices only change speed, never the
answer: reducing rows and columns by constants shifts every permutation's score equally.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from core.alignment.warm_start import usable_prices
from core.errors import MergerError

# Below this size a GPU solve cannot win: the transfer and launches cost more than the CPU.
GPU_MIN_SIZE = 2048
# Below this size scipy takes microseconds; the compiled auction would only add its start-up.
AUCTION_MIN_SIZE = 64
SOLVERS = ("scipy", "auction", "auction-torch", "auction-cuda")
_DUAL_REPAIR_ROUNDS = 60


class NonFiniteScore(MergerError):
    """The score matrix holds NaN or infinite values (callers may say where they came from)."""

    def __init__(self) -> None:
        super().__init__(
            "the assignment score contains NaN or infinite values",
            hint="check the models for NaN/inf weights",
        )


def compiled_auction_available() -> bool:
    """Whether numba is installed, so the compiled CPU auction can run."""
    return importlib.util.find_spec("numba") is not None


def warm_up() -> None:
    """Load (or, once per machine, compile) the compiled solver, and the copy kernels that
    weight matching uses beside it, ahead of their first use.

    The app calls this on a background thread at start, so the first weight matching
    does not wait for it; benchmarks call it as part of start-up."""
    if compiled_auction_available():
        from core.alignment import auction_lap, copy_kernels

        auction_lap.warm_up()
        copy_kernels.warm_up()


def available_solvers() -> list[str]:
    """Solver names usable on this machine."""
    names = ["scipy"]
    if compiled_auction_available():
        names.append("auction")
    names.append("auction-torch")
    if torch.cuda.is_available():
        names.append("auction-cuda")
    return names


def pick_solver(n: int, device: str | torch.device = "auto", *, square: bool = True) -> str:
    """Choose a solver for an n×n problem (n×m when not `square`)."""
    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MergerError(
                "a CUDA assignment solver was asked for but no CUDA device is available",
                hint="use device 'cpu' or 'auto'",
            )
        if square and n >= GPU_MIN_SIZE:
            return "auction-cuda"
    if square and n >= AUCTION_MIN_SIZE and compiled_auction_available():
        return "auction"
    return "scipy"


def resolve_solver(name: str | None, n: int, m: int, device: str | torch.device = "auto") -> str:
    """The solver that will run: `name` ('auto' or None picks), checked against the problem."""
    device = str(device)
    if name in (None, "auto"):
        return pick_solver(n, device, square=n == m)
    if name not in SOLVERS:
        raise MergerError(
            f"unknown assignment solver '{name}'; available: {', '.join(available_solvers())}"
        )
    if name == "auction" and device.startswith("cuda") and torch.cuda.is_available():
        return "auction-cuda"
    if name == "auction-cuda" and not torch.cuda.is_available():
        raise MergerError(
            "the 'auction-cuda' solver needs a CUDA device, and none is available",
            hint="use solver 'auction' (CPU) or 'scipy'",
        )
    if name == "auction" and not compiled_auction_available():
        raise MergerError(
            "the 'auction' solver needs numba, which is not installed",
            hint="pip install numba, or use solver 'scipy'",
        )
    if name != "scipy" and n != m:
        raise MergerError(
            f"the auction solver needs a square score matrix, got {n}x{m}",
            hint="use solver 'scipy' for rectangular problems",
        )
    return name


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
    ('scipy', 'auction', 'auction-torch', 'auction-cuda').
    """
    perm, _ = _solve(score, maximize, device, warm_start, None, solver, want_prices=False)
    return perm


def solve_assignment_warm(
    score: torch.Tensor | np.ndarray,
    *,
    maximize: bool = True,
    device: str = "auto",
    prices: np.ndarray | None = None,
    previous: np.ndarray | None = None,
    solver: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Like `solve_assignment` but also return column prices for the next warm start.

    Prices are dual values of the columns in the maximization form; they satisfy
    score[i, j] - prices[j] <= score[i, perm[i]] - prices[perm[i]] up to float noise
    (they may be approximate when a repair stopped early; they are only a hint).
    `previous` is the last solve's permutation; the compiled auction starts from it.
    """
    return _solve(score, maximize, device, prices, previous, solver, want_prices=True)


class WarmAssignment:
    """Solve a sequence of similar square problems, each starting from the last solution.

    Weight matching re-solves every group once per sweep on a cost that changed a little.
    The compiled auction restarts from the last prices and permutation (a few bids per
    row instead of tens); scipy cannot use them and solves cold, which measured faster
    than feeding it repaired prices.
    """

    def __init__(self, *, solver: str | None = None, device: str = "auto") -> None:
        self.solver = solver
        self.device = device
        self.prices: np.ndarray | None = None
        self.perm: np.ndarray | None = None

    def solve(self, score: torch.Tensor | np.ndarray) -> np.ndarray:
        """Maximize Σ score[i, perm[i]]; remember the solution for the next call."""
        n, m = _check_shape(score)
        name = resolve_solver(self.solver, n, m, self.device)
        if name == "scipy":
            return solve_assignment(score, solver=name)
        perm, self.prices = _solve(
            score, True, self.device, self.prices, self.perm, name, want_prices=True
        )
        self.perm = perm
        return perm


def _solve(
    score: torch.Tensor | np.ndarray,
    maximize: bool,
    device: str,
    prices: np.ndarray | None,
    previous: np.ndarray | None,
    solver: str | None,
    *,
    want_prices: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    n, m = _check_shape(score)
    name = resolve_solver(solver, n, m, device)
    if name == "auction":
        return _compiled_auction(score, maximize, prices, previous)
    if name == "scipy":
        s = _to_numpy64(score)
        if not maximize:
            s = -s
        return _scipy_warm(s, prices, want_prices=want_prices)
    dev = "cuda" if name == "auction-cuda" else "cpu"
    t = torch.as_tensor(score).to(device=dev, dtype=torch.float64)
    if not maximize:
        t = -t
    return auction_assignment(t, prices=prices)


def _compiled_auction(
    score: torch.Tensor | np.ndarray,
    maximize: bool,
    prices: np.ndarray | None,
    previous: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve with the numba auction (which hands degenerate inputs to scipy itself)."""
    from core.alignment import auction_lap

    if isinstance(score, torch.Tensor):
        if score.dtype not in (torch.float32, torch.float64):
            score = score.to(torch.float64)  # numpy has no bfloat16; ints become floats
        score = score.detach().cpu().numpy()
    s = np.asarray(score)
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    if not maximize:
        s = -s
    try:
        return auction_lap.solve(s, prices, previous)
    except ValueError as exc:
        raise NonFiniteScore() from exc


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
        raise NonFiniteScore()
    return s


def _scipy_warm(
    s: np.ndarray, prices: np.ndarray | None, *, want_prices: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Maximize with scipy on a matrix reduced by `prices`; return perm and new prices."""
    n, m = s.shape
    if prices is None and not want_prices:
        rows, cols = linear_sum_assignment(s, maximize=True)
        perm = np.empty(n, dtype=np.int64)
        perm[rows] = cols
        return perm, None
    v = np.zeros(m) if prices is None or len(prices) != m else np.asarray(prices, np.float64)
    # Reduced cost for minimization: u_i + v_j - s_ij >= 0, zero where row i is tight.
    red = s - v[None, :]
    u = red.max(axis=1)
    np.subtract(u[:, None], red, out=red)
    rows, cols = linear_sum_assignment(red)
    perm = np.empty(n, dtype=np.int64)
    perm[rows] = cols
    if n == m and want_prices:
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


# -- ε-scaling auction (Bertsekas), vectorized in torch ---------------------------------
# Integer benefits scaled by (n + 1) make a final ε = 1 equivalent to ε < 1/n, at which an
# ε-complementary-slack assignment is optimal. Float scores are first quantized to
# integers (2**_AUCTION_BITS levels); the quantized optimum is then made exact for the
# float scores by the compiled finish of `auction_lap` (a sparse shortest-path pass over
# the entries within the total slack), or by scipy where numba is missing.
_AUCTION_BITS = 24
_EPS_FACTOR = 6.0
# Bid rounds allowed per row before scipy takes over (a stall: ties over a huge range).
_MAX_ROUNDS_PER_ROW = 200


class _AuctionStalled(Exception):
    """The torch auction exceeded its round budget."""


_CHUNK_ELEMENTS = 1 << 24


def auction_assignment(
    score: torch.Tensor, *, prices: np.ndarray | None = None, exact: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Maximize Σ score[i, perm[i]] for a square float64 tensor on any device.

    Returns (perm, column prices in score units). With `exact`, float scores get a final
    scipy repair; integer-valued scores of modest range are exact without it.
    """
    n = score.shape[0]
    if n == 1:
        return np.zeros(1, dtype=np.int64), np.zeros(1)
    if not bool(torch.isfinite(score).all()):
        raise NonFiniteScore()
    benefit, unit, integral = _integer_benefits(score)
    start = None
    shifted = usable_prices(prices, n, float(score.max() - score.min()))
    if shifted is not None:
        start = torch.as_tensor(shifted, dtype=torch.float64, device=score.device) / unit
    try:
        assign, price = _auction(benefit, start)
    except _AuctionStalled:
        perm = _scipy_warm(score.cpu().numpy(), None, want_prices=False)[0]
        return perm, np.zeros(n)
    perm = assign.cpu().numpy().astype(np.int64)
    col_prices = (price * unit).cpu().numpy()
    if exact and not integral:
        if compiled_auction_available():
            from core.alignment.auction_lap import make_exact

            perm, col_prices = make_exact(score.cpu().numpy(), col_prices, perm)
        else:
            perm, col_prices = _scipy_warm(score.cpu().numpy(), col_prices)
    return perm, col_prices


def _integer_benefits(score: torch.Tensor) -> tuple[torch.Tensor, float, bool]:
    """Integer benefits times (n + 1), score units per benefit unit, and whether exact."""
    n = score.shape[0]
    shifted = score - score.min()
    span = float(shifted.max())
    if span == 0.0:
        return torch.zeros_like(score), 1.0, True
    integral = bool((score == torch.round(score)).all()) and span <= 2**_AUCTION_BITS
    step = 1.0 if integral else span / 2**_AUCTION_BITS  # score units per integer level
    levels = shifted if integral else torch.round(shifted / step)
    return levels * (n + 1), step / (n + 1), integral


def _auction(
    benefit: torch.Tensor, prices: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward auction with ε-scaling down to ε = 1 on integer benefits."""
    n = benefit.shape[0]
    dev = benefit.device
    price = torch.zeros(n, dtype=torch.float64, device=dev) if prices is None else prices.clone()
    assign = torch.full((n,), -1, dtype=torch.long, device=dev)
    owner = torch.full((n,), -1, dtype=torch.long, device=dev)
    span = float(benefit.max() - benefit.min())
    eps = max(1.0, span / (_EPS_FACTOR if prices is None else _EPS_FACTOR**3))
    rounds = 0
    while True:
        _drop_unhappy(benefit, price, assign, owner, eps)
        while True:
            free = torch.nonzero(assign < 0).flatten()
            if len(free) == 0:
                break
            _bid_round(benefit, price, assign, owner, free, eps)
            rounds += 1
            if rounds > _MAX_ROUNDS_PER_ROW * n:
                raise _AuctionStalled
        if eps <= 1.0:
            return assign, price
        eps = max(1.0, eps / _EPS_FACTOR)


def _drop_unhappy(benefit, price, assign, owner, eps: float) -> None:
    """Unassign rows whose object is no longer within ε of their best (ε-CS)."""
    held = assign >= 0
    if not bool(held.any()):
        return
    rows = torch.nonzero(held).flatten()
    best = torch.cat([(benefit[c] - price).max(dim=1).values for c in _chunks(rows, len(price))])
    mine = benefit[rows, assign[rows]] - price[assign[rows]]
    bad = rows[mine < best - eps]
    owner[assign[bad]] = -1
    assign[bad] = -1


def _bid_round(benefit, price, assign, owner, free: torch.Tensor, eps: float) -> None:
    """Every free row bids for its best object; each object goes to its highest bid."""
    n = len(price)
    objs, bids = [], []
    for rows in _chunks(free, n):
        top = (benefit[rows] - price).topk(2, dim=1)
        objs.append(top.indices[:, 0])
        bids.append(price[top.indices[:, 0]] + (top.values[:, 0] - top.values[:, 1]) + eps)
    obj, bid = torch.cat(objs), torch.cat(bids)
    best = torch.full((n,), -torch.inf, dtype=bid.dtype, device=bid.device)
    best.scatter_reduce_(0, obj, bid, reduce="amax")
    top_bidder = bid >= best[obj]
    winner = torch.full((n,), -1, dtype=torch.long, device=bid.device)
    winner.scatter_reduce_(0, obj[top_bidder], free[top_bidder], reduce="amax")
    won = torch.nonzero(winner >= 0).flatten()
    losers = owner[won]
    assign[losers[losers >= 0]] = -1
    owner[won] = winner[won]
    assign[winner[won]] = won
    price[won] = best[won]


def _chunks(rows: torch.Tensor, width: int) -> list[torch.Tensor]:
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    return [rows[i : i + step] for i in range(0, len(rows), step)]
