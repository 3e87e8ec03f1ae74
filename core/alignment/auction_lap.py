"""Exact linear assignment on the CPU: a compiled auction with a shortest-path finish.

Weight matching solves one dense n×n assignment per permutation group per sweep, tens of
sweeps. scipy's Jonker-Volgenant takes 50-350 ms at n = 2048 on these costs (inner
products of random weights are hard instances) and cannot be warm-started. This solver,
compiled with numba, is 6× (n = 512) to 27× (n = 8192) faster cold, faster still warm,
and returns the same optimum (tested against scipy; `benchmarks/weight_matching.py
--solvers` measures it):

1. **Auction with ε-scaling** (Bertsekas) on the score, Gauss-Seidel (one bidder at a time).
   Each row keeps a list of its K best columns and the value `tau` of the (K+1)-th at the
   time of its last full scan. Prices only rise, so no column outside the list can ever be
   worth more than `tau`: a bid reads K entries instead of n and rescans the row only when
   its best listed value falls below `tau`. The bid increment uses max(second listed, tau),
   an upper bound of the true second best, which keeps ε-complementary slackness.
2. **Exact finish.** The auction's prices give row profits π_i = max_j(s_ij − p_j), dual
   feasible for the whole matrix. A row whose assigned column is not its maximum has a slack;
   the total slack G bounds how far the auction's assignment is from optimal, so any better
   assignment only uses entries whose reduced cost is ≤ G. Those few entries (1-2 per row)
   go to a sparse shortest-augmenting-path solver (Dijkstra with a heap) that re-assigns the
   slack rows exactly. No tolerance is involved: the result is the optimum of the float64
   scores, as scipy's is.

Warm start: pass the previous solve's prices and permutation; the auction then starts
from a small ε, and a slightly changed matrix needs a few bids per row.

All kernels release the GIL (`nogil`), so a Qt window stays responsive while they run.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.optimize import linear_sum_assignment

from core.alignment.warm_start import as_permutation, usable_prices

# Candidate columns kept per row. 8 was fastest on weight-matching costs at n = 512-4096.
LIST_SIZE = 8
# ε-scaling: start at span·2e-3 cold, at span·1e-5 warm, divide by 8 per phase down to
# span·1e-6 (tuned on weight-matching costs; the exact finish repairs whatever slack is left).
# A cold start begins from column-mean prices (see `_cold_prices`), already close to the
# final ones, which is why its first ε can be small.
_EPS_COLD = 2e-3
_EPS_WARM = 1e-5
_EPS_FINAL = 1e-6
_THETA = 8.0
# Bids allowed per row before giving up on the auction (pathological ties): scipy takes over.
# Weight-matching costs need ~25 cold, ~5 warm.
_MAX_BIDS_PER_ROW = 200
# The sparse finish is abandoned for scipy's dense solve once its shortest-path searches
# have read this many candidate entries per matrix entry (nearly constant rows: every
# free row reads every candidate, 6 s at n = 2048 where scipy takes 0.24 s). Dead units'
# rows and columns in activation matching also have thousands of candidates each, yet
# finish in ~1 s at n = 4096 where scipy takes 17-19 s: a bound on the work done, not
# on the candidates, tells the two apart.
_FINISH_WORK = 16
# Candidates beyond this fraction of the matrix are not worth their memory (32 bytes
# each): the finish would be dense anyway.
_DENSE_FINISH = 0.25
# Integer scores spanning at most this many times n hold ties everywhere; the auction
# wanders among them (0.5 s at n = 2048 with values 0..99, where scipy takes 0.09 s).
_TIE_SPAN = 4


def solve(
    score: np.ndarray,
    prices: np.ndarray | None = None,
    perm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximize Σ_i score[i, perm[i]] over permutations of a square float matrix.

    `prices` and `perm` from a previous call on a similar matrix make it faster; they never
    change the answer. Returns (perm, prices). Where the auction cannot pay (it stalls, or
    leaves so much slack that the finish would be dense: near-ties everywhere) scipy
    solves the matrix instead, and the auction's prices are returned as the warm start.
    """
    a = np.ascontiguousarray(score)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    n = a.shape[0]
    if a.shape != (n, n) or n == 0:
        raise ValueError(f"the auction solver needs a non-empty square matrix, got {a.shape}")
    lo, hi = _value_range(a)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("the assignment score contains NaN or infinite values")
    span = hi - lo
    if n == 1 or span == 0.0:
        return np.arange(n, dtype=np.int64), np.zeros(n)
    eps = _schedule(lo, hi, warm=True)
    if not (np.isfinite(span) and eps[-1] > 0.0):  # overflowing or subnormal range
        return _scipy(a), np.zeros(n)
    if span <= _TIE_SPAN * n and _all_integers(a):
        return _scipy(a), np.zeros(n)  # a few distinct integers: ties everywhere
    price, assign = usable_prices(prices, n, span), as_permutation(perm, n)
    if price is None or assign is None:  # no usable warm start (`warm_start`): cold
        price, assign = _cold_prices(a), np.full(n, -1, dtype=np.int64)
        eps = _schedule(lo, hi, warm=False)
    k = min(LIST_SIZE, n - 1)
    cand, tau = np.empty((n, k), np.int64), np.empty(n)
    if not _auction(a, price, assign, eps, cand, tau, _MAX_BIDS_PER_ROW * n):
        return _scipy(a), price  # stalled
    return _finish_or_scipy(a, price, assign, _listed_candidates(a, price, assign, cand, tau))


def _finish_or_scipy(a: np.ndarray, price: np.ndarray, assign: np.ndarray, candidates):
    """The sparse exact finish over `candidates`, or scipy where it would cost more (near-
    ties everywhere: the finish's searches read every candidate again and again)."""
    n = a.shape[0]
    if len(candidates[3]) <= _DENSE_FINISH * n * n and _finish(
        a, price, assign, *candidates, _FINISH_WORK * n * n
    ):
        return assign, price
    return _scipy(a), price


def _scipy(a: np.ndarray) -> np.ndarray:
    rows, cols = linear_sum_assignment(a, maximize=True)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm


def warm_up() -> None:
    """Compile the kernels (first run on a machine, seconds) or load them from numba's
    on-disk cache (a fraction of a second), for float32 and float64 scores."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        solve(rng.normal(size=(16, 16)).astype(dtype))


def make_exact(
    score: np.ndarray, prices: np.ndarray, perm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a near-optimal assignment and its prices (an auction's) into the exact optimum.

    This is the finish of `solve`, also used after the torch auction on the GPU. A
    `perm` that is not a full permutation, or one so far from optimal that the finish
    would be dense, goes to scipy instead."""
    a = np.ascontiguousarray(score)
    n = a.shape[0]
    price, assign = usable_prices(prices, n), as_permutation(perm, n)
    if price is None:
        return _scipy(a), np.zeros(n)
    if assign is None:
        return _scipy(a), price
    return _finish_or_scipy(a, price, assign, _candidates(a, price, assign))


def _schedule(lo: float, hi: float, warm: bool) -> np.ndarray:
    """ε per phase for scores in [lo, hi].

    Price steps below ~1e-12 of the scores' magnitude would vanish in float64 rounding and
    stall the auction, so ε stops there; the exact finish repairs what a coarser ε leaves."""
    span = hi - lo
    final = max(span * _EPS_FINAL, max(abs(lo), abs(hi)) * 1e-12)
    eps = max(span * (_EPS_WARM if warm else _EPS_COLD), final)
    steps = [eps]
    while eps > final:
        eps = max(eps / _THETA, final)
        steps.append(eps)
    return np.array(steps)


_jit = njit(nogil=True, cache=True)


def _value_range(a: np.ndarray) -> tuple[float, float]:
    """Smallest and largest score; NaN if any score is NaN (numpy's min/max propagate it,
    and run vectorized: half the time of a compiled loop)."""
    return float(a.min()), float(a.max())


@_jit
def _all_integers(a):
    """Whether every score is a whole number (stops at the first that is not)."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if a[i, j] != np.floor(a[i, j]):
                return False
    return True


@_jit
def _cold_prices(a):
    """Column means, shifted to start at 0: the prices a cold auction starts from.

    Adding a constant to a column does not change which assignment is optimal, but a
    column that scores high for every row (a unit with large weights, common in weight
    matching) starts a price war among all rows when prices start at 0. Its mean is a
    first estimate of its price: measured 3× fewer cold-solve bids on ResNet costs, and
    as fast or faster on every other class tried (Gaussian, low-rank, geometric)."""
    n = a.shape[0]
    price = np.zeros(n)
    for i in range(n):
        for j in range(n):
            price[j] += a[i, j]
    low = np.inf
    for j in range(n):
        price[j] /= n
        if price[j] < low:
            low = price[j]
    for j in range(n):
        price[j] -= low
    return price


@_jit
def _scan_row(a, price, i, cand, tau, k):
    """Refill row i's candidate list; return its best value, column and second value."""
    vals = np.empty(k + 1)
    idx = np.empty(k + 1, np.int64)
    cnt = 0
    for j in range(a.shape[1]):
        t = a[i, j] - price[j]
        if cnt <= k:
            p = cnt
            cnt += 1
        elif t > vals[k]:
            p = k
        else:
            continue
        while p > 0 and vals[p - 1] < t:
            vals[p] = vals[p - 1]
            idx[p] = idx[p - 1]
            p -= 1
        vals[p] = t
        idx[p] = j
    for q in range(k):
        cand[i, q] = idx[q]
    tau[i] = vals[k]
    return vals[0], idx[0], vals[1]


@_jit
def _best_two(a, price, i, cand, tau, k):
    """Best value and column of row i, and an upper bound of its second-best value."""
    w1 = -np.inf
    w2 = -np.inf
    j1 = -1
    for q in range(k):
        j = cand[i, q]
        t = a[i, j] - price[j]
        if t > w1:
            w2 = w1
            w1 = t
            j1 = j
        elif t > w2:
            w2 = t
    if w1 >= tau[i]:
        return w1, j1, max(w2, tau[i])
    return _scan_row(a, price, i, cand, tau, k)


@_jit
def _auction(a, price, assign, eps_steps, cand, tau, max_bids):
    """Run the ε-scaling phases in place; False if the bid cap was hit.

    `cand` (n×k) and `tau` (n) are the rows' candidate lists and bounds, filled here and
    left for the finish (`_listed_candidates`)."""
    n = a.shape[0]
    k = cand.shape[1]
    owner = np.full(n, -1, np.int64)
    for i in range(n):
        if assign[i] >= 0:
            owner[assign[i]] = i
        _scan_row(a, price, i, cand, tau, k)
    queue = np.empty(n, np.int64)
    bids = 0
    for phase in range(len(eps_steps)):
        eps = eps_steps[phase]
        tail = 0
        for i in range(n):  # keep the rows that still satisfy ε-CS, queue the rest
            j0 = assign[i]
            if j0 >= 0:
                w1, j1, w2 = _best_two(a, price, i, cand, tau, k)
                if a[i, j0] - price[j0] < w1 - eps:
                    assign[i] = -1
                    owner[j0] = -1
            if assign[i] < 0:
                queue[tail] = i
                tail += 1
        head = 0
        waiting = tail
        tail %= n
        while waiting > 0:
            i = queue[head]
            head = (head + 1) % n
            waiting -= 1
            w1, j1, w2 = _best_two(a, price, i, cand, tau, k)
            price[j1] += w1 - w2 + eps
            previous = owner[j1]
            owner[j1] = i
            assign[i] = j1
            if previous >= 0:
                assign[previous] = -1
                queue[tail] = previous
                tail = (tail + 1) % n
                waiting += 1
            bids += 1
            if bids > max_bids:
                return False
    return True


@_jit
def _heap_push(keys, vals, size, key, val):
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if keys[parent] <= key:
            break
        keys[i] = keys[parent]
        vals[i] = vals[parent]
        i = parent
    keys[i] = key
    vals[i] = val
    return size + 1


@_jit
def _heap_pop(keys, vals, size):
    key = keys[0]
    val = vals[0]
    size -= 1
    last_key = keys[size]
    last_val = vals[size]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and keys[c + 1] < keys[c]:
            c += 1
        if last_key <= keys[c]:
            break
        keys[i] = keys[c]
        vals[i] = vals[c]
        i = c
    keys[i] = last_key
    vals[i] = last_val
    return key, val, size


@_jit
def _candidates(a, price, assign):
    """Row profits, slacks, and the CSR entries whose reduced cost is ≤ total slack."""
    n = a.shape[0]
    profit = np.empty(n)
    slack = np.empty(n)
    for i in range(n):
        best = -np.inf
        for j in range(n):
            t = a[i, j] - price[j]
            if t > best:
                best = t
        profit[i] = best
        slack[i] = best - (a[i, assign[i]] - price[assign[i]])
    listed = np.zeros(n, np.bool_)
    indptr, indices, cost = _csr(a, price, profit, slack.sum(), np.empty((n, 0), np.int64), listed)
    return profit, slack, indptr, indices, cost


@_jit
def _listed_candidates(a, price, assign, cand, tau):
    """`_candidates`, reading whole rows only where the auction's lists cannot vouch.

    After the auction every row i has a list of columns and a bound tau[i] that no
    unlisted column's value (score − price) exceeds, since prices only rose after the
    list was made. So when the best listed value is ≥ tau[i] it is the row's profit, and
    when profit − tau[i] exceeds the total slack G no unlisted column can have a reduced
    cost ≤ G: that row's candidates are among its listed ones (its assigned column too,
    whose reduced cost is its slack ≤ G). On weight-matching costs nearly every row
    qualifies, which saves two passes over the matrix (~6 ms per solve at n = 2048)."""
    n = a.shape[0]
    profit = np.empty(n)
    slack = np.empty(n)
    listed = np.ones(n, np.bool_)
    for i in range(n):
        best = -np.inf
        for q in range(cand.shape[1]):
            j = cand[i, q]
            best = max(best, a[i, j] - price[j])
        if best < tau[i]:  # an unlisted column may be better: read the row
            listed[i] = False
            for j in range(n):
                best = max(best, a[i, j] - price[j])
        profit[i] = best
        slack[i] = best - (a[i, assign[i]] - price[assign[i]])
    gap = slack.sum()
    for i in range(n):
        if profit[i] - tau[i] <= gap:
            listed[i] = False
    indptr, indices, cost = _csr(a, price, profit, gap, cand, listed)
    return profit, slack, indptr, indices, cost


@_jit
def _csr(a, price, profit, gap, cand, listed):
    """Entries with reduced cost ≤ gap as CSR (column, −score): from row i's list where
    listed[i], else from its whole row. Counted first, then filled."""
    n = a.shape[0]
    every = np.arange(n)
    indptr = np.zeros(n + 1, np.int64)
    none_i, none_c = np.empty(0, np.int64), np.empty(0)
    for i in range(n):
        cols = cand[i] if listed[i] else every
        found = _row_entries(a, price, i, profit[i], gap, cols, none_i, none_c, 0, False)
        indptr[i + 1] = indptr[i] + found
    indices = np.empty(indptr[n], np.int64)
    cost = np.empty(indptr[n])
    for i in range(n):
        cols = cand[i] if listed[i] else every
        _row_entries(a, price, i, profit[i], gap, cols, indices, cost, indptr[i], True)
    return indptr, indices, cost


@_jit
def _row_entries(a, price, i, row_profit, gap, cols, indices, cost, start, fill):
    """Count (or, with `fill`, also store from `start`) row i's columns among `cols`
    whose reduced cost is ≤ gap."""
    p = start
    for j in cols:
        if row_profit - (a[i, j] - price[j]) <= gap:
            if fill:
                indices[p] = j
                cost[p] = -a[i, j]
            p += 1
    return p - start


@_jit
def _finish(a, price, assign, profit, slack, indptr, indices, cost, budget):
    """Make the auction's assignment exactly optimal (min-cost form, cost = -score).

    Returns False, leaving `assign` and `price` as they were, once the searches have read
    more than `budget` candidate entries."""
    n = a.shape[0]
    work = 0
    u = -profit
    v = -price
    row2col = np.full(n, -1, np.int64)
    col2row = np.full(n, -1, np.int64)
    nfree = 0
    free = np.empty(n, np.int64)
    for i in range(n):
        if slack[i] > 0.0:
            free[nfree] = i
            nfree += 1
        else:
            row2col[i] = assign[i]
            col2row[assign[i]] = i
    dist = np.full(n, np.inf)
    pred = np.full(n, -1, np.int64)
    done = np.zeros(n, np.bool_)
    touched = np.empty(n, np.int64)
    rows = np.empty(n, np.int64)
    settled = np.empty(n, np.int64)
    keys = np.empty(len(indices) + 1)
    vals = np.empty(len(indices) + 1, np.int64)
    for q in range(nfree):
        start = free[q]
        ntouched = 0
        nrows = 0
        nsettled = 0
        size = 0
        i = start
        mu = 0.0
        sink = -1
        while True:
            rows[nrows] = i
            nrows += 1
            work += indptr[i + 1] - indptr[i]
            if work > budget:
                return False
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                if done[j]:
                    continue
                r = mu + cost[e] - u[i] - v[j]
                if r < dist[j]:
                    if dist[j] == np.inf:
                        touched[ntouched] = j
                        ntouched += 1
                    dist[j] = r
                    pred[j] = i
                    size = _heap_push(keys, vals, size, r, j)
            j = -1
            while size > 0:
                d, c, size = _heap_pop(keys, vals, size)
                if not done[c] and d == dist[c]:
                    j = c
                    break
            if j < 0:
                raise RuntimeError("no augmenting path among the candidates")
            done[j] = True
            settled[nsettled] = j
            nsettled += 1
            mu = dist[j]
            if col2row[j] < 0:
                sink = j
                break
            i = col2row[j]
        u[start] += mu
        for t in range(1, nrows):
            i = rows[t]
            u[i] += mu - dist[row2col[i]]
        for t in range(nsettled):
            j = settled[t]
            v[j] -= mu - dist[j]
        j = sink
        while True:
            i = pred[j]
            col2row[j] = i
            nxt = row2col[i]
            row2col[i] = j
            if i == start:
                break
            j = nxt
        for t in range(ntouched):
            j = touched[t]
            dist[j] = np.inf
            done[j] = False
    for i in range(n):
        assign[i] = row2col[i]
        price[i] = -v[i]
    return True
