"""The compiled auction: the same optimum as scipy, cold and warm, and it frees the GIL."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from core.alignment import auction_lap
from core.alignment.solvers import WarmAssignment, solve_assignment


def best(score: np.ndarray) -> float:
    rows, cols = linear_sum_assignment(score.astype(np.float64), maximize=True)
    return float(score.astype(np.float64)[rows, cols].sum())


def value(score: np.ndarray, perm: np.ndarray) -> float:
    return float(score.astype(np.float64)[np.arange(len(perm)), perm].sum())


def similarity(rng: np.random.Generator, n: int, d: int, dtype=np.float64) -> np.ndarray:
    """A weight-matching-like cost: inner products of two random weight matrices."""
    return (rng.normal(size=(n, d)) @ rng.normal(size=(n, d)).T).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_cold_solve_is_scipys_optimum(seed, dtype):
    score = similarity(np.random.default_rng(seed), 300, 300, dtype)
    perm, prices = auction_lap.solve(score)
    _, cols = linear_sum_assignment(score.astype(np.float64), maximize=True)
    # Generic float scores have one optimum, so the permutations themselves agree.
    assert np.array_equal(perm, cols)
    # Prices are dual feasible: each row's assigned column is its best at those prices.
    reduced = score.astype(np.float64) - prices[None, :]
    assert np.all(reduced.max(axis=1) <= reduced[np.arange(300), perm] + 1e-9)


def test_warm_solves_of_a_drifting_matrix_stay_exact():
    """Like weight matching: each step changes the cost by a low-rank update."""
    rng = np.random.default_rng(7)
    score = similarity(rng, 400, 400)
    warm = WarmAssignment(solver="auction", device="cpu")
    for _ in range(6):
        perm = warm.solve(score)
        assert value(score, perm) == pytest.approx(best(score), rel=1e-13)
        score = score + 0.05 * similarity(rng, 400, 4)


def test_a_misleading_warm_start_does_not_change_the_answer():
    rng = np.random.default_rng(8)
    score = similarity(rng, 200, 50)
    wrong_prices = rng.normal(size=200) * 100.0
    wrong_perm = rng.permutation(200)
    perm, _ = auction_lap.solve(score, wrong_prices, wrong_perm)
    assert value(score, perm) == pytest.approx(best(score), rel=1e-13)


@pytest.mark.parametrize(
    "kind", ["all_equal", "integer_ties", "fraction_ties", "duplicate_rows", "one_hot"]
)
def test_degenerate_scores(kind):
    rng = np.random.default_rng(9)
    n = 120
    if kind == "all_equal":
        score = np.full((n, n), 3.0)
    elif kind == "integer_ties":
        score = rng.integers(0, 3, size=(n, n)).astype(np.float64)
    elif kind == "fraction_ties":  # as tie-heavy, but not integers: the auction solves it
        score = rng.integers(0, 3, size=(n, n)) / 3.0
    elif kind == "duplicate_rows":
        score = np.repeat(rng.normal(size=(1, n)), n, axis=0)
    else:
        score = np.zeros((n, n))
        score[np.arange(n), rng.permutation(n)] = 1.0
    perm, _ = auction_lap.solve(score)
    assert sorted(perm.tolist()) == list(range(n))
    assert value(score, perm) == pytest.approx(best(score), abs=1e-9)


def test_few_distinct_integers_go_to_scipy(monkeypatch):
    """Integer scores with a span ≤ 4n tie everywhere, where the auction wanders: scipy
    solves them directly. A wider integer range is still the auction's."""
    calls = []
    real = auction_lap._auction
    monkeypatch.setattr(auction_lap, "_auction", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(13)
    n = 150
    ties = rng.integers(0, 100, size=(n, n)).astype(np.float64)
    perm, _ = auction_lap.solve(ties)
    assert value(ties, perm) == best(ties) and not calls
    wide = rng.integers(0, 10**6, size=(n, n)).astype(np.float64)
    perm, _ = auction_lap.solve(wide)
    assert value(wide, perm) == best(wide) and calls


def test_cold_prices_are_shifted_column_means():
    score = np.array([[1.0, 5.0, 0.0], [3.0, 7.0, 2.0], [2.0, 0.0, 4.0]])
    # column means 2, 4, 2, shifted by the smallest
    assert auction_lap._cold_prices(score) == pytest.approx([0.0, 2.0, 0.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused(bad):
    score = np.random.default_rng(14).normal(size=(40, 40)).astype(np.float32)
    score[39, 17] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        auction_lap.solve(score)


@pytest.mark.parametrize("start", ["cold", "warm", "coarse"])
def test_listed_candidates_equal_a_full_scan(start):
    """The finish reads only the auction's candidate lists where their bounds vouch for the
    rest of the row: it must find exactly the entries a scan of every row finds. A coarse
    final ε leaves a large total slack, so that rows whose lists cannot vouch occur too."""
    rng = np.random.default_rng(15)
    vouched = unvouched = 0
    for trial in range(6):
        n = int(rng.integers(20, 300))
        score = similarity(rng, n, int(rng.integers(2, 80)))
        if trial % 2:
            score = score + 3.0 * rng.normal(size=(1, n))  # strong column effects
        price, assign = auction_lap._cold_prices(score), np.full(n, -1, dtype=np.int64)
        if start == "warm":
            _, price = auction_lap.solve(score + 0.05 * rng.normal(size=(n, n)))
            assign = rng.permutation(n)
        lo, hi = auction_lap._value_range(score)
        steps = auction_lap._schedule(lo, hi, warm=start == "warm")
        if start == "coarse":
            steps = steps[:1]
        cand, tau = np.empty((n, auction_lap.LIST_SIZE), np.int64), np.empty(n)
        assert auction_lap._auction(score, price, assign, steps, cand, tau, 200 * n)
        full = auction_lap._candidates(score, price, assign)
        listed = auction_lap._listed_candidates(score, price, assign, cand, tau.copy())
        np.testing.assert_array_equal(listed[0], full[0])  # profits
        np.testing.assert_array_equal(listed[1], full[1])  # slacks
        np.testing.assert_array_equal(listed[2], full[2])  # CSR row starts
        for i in range(n):
            row = slice(full[2][i], full[2][i + 1])
            assert sorted(listed[3][row]) == sorted(full[3][row])
        margin_ok = full[0] - tau > full[1].sum()
        vouched += int(margin_ok.sum())
        unvouched += int((~margin_ok).sum())
    assert vouched > 0
    if start == "coarse":
        assert unvouched > 0


def test_tiny_differences_on_a_large_offset():
    """Price steps of span·1e-6 would vanish in rounding next to 1e6: the ε floor keeps the
    auction moving (it finishes within a few bids per row instead of running into its cap)."""
    n = 300
    score = 1e6 + 1e-9 * np.random.default_rng(12).normal(size=(n, n))
    steps = auction_lap._schedule(float(score.min()), float(score.max()), warm=False)
    price, assign = np.zeros(n), np.full(n, -1, dtype=np.int64)
    cand, tau = np.empty((n, auction_lap.LIST_SIZE), np.int64), np.empty(n)
    assert auction_lap._auction(score, price, assign, steps, cand, tau, 20 * n)
    perm, _ = auction_lap.solve(score)
    assert value(score, perm) == pytest.approx(best(score), abs=1e-9)


def test_a_stalled_auction_hands_over_to_scipy(monkeypatch):
    score = similarity(np.random.default_rng(10), 100, 100)
    monkeypatch.setattr(auction_lap, "_MAX_BIDS_PER_ROW", 0)
    perm, _ = auction_lap.solve(score)
    assert value(score, perm) == pytest.approx(best(score), rel=1e-13)
    perm = solve_assignment(score, solver="auction")
    assert value(score, perm) == pytest.approx(best(score), rel=1e-13)


def test_the_solver_releases_the_gil():
    """A GUI thread must keep running while a large assignment is solved."""
    score = similarity(np.random.default_rng(11), 1500, 1500, np.float32)
    auction_lap.solve(score[:80, :80])  # compile or load the kernels first
    ticks = 0
    finished = threading.Event()

    def solve() -> None:
        for _ in range(3):
            auction_lap.solve(score)
        finished.set()

    worker = threading.Thread(target=solve)
    start = time.perf_counter()
    worker.start()
    while not finished.is_set():
        time.sleep(0.001)
        ticks += 1
    worker.join()
    elapsed = time.perf_counter() - start
    # A kernel holding the GIL blocks the ticker for its whole run (about one tick per
    # solve); released, the ticker runs about every millisecond.
    assert ticks >= max(10, elapsed / 0.005)


def test_make_exact_repairs_any_starting_assignment():
    """The finish is exact from any permutation and prices (the GPU auction's, say)."""
    rng = np.random.default_rng(13)
    score = similarity(rng, 250, 250, np.float32)
    optimum, prices = auction_lap.solve(score)
    nearly = optimum.copy()
    nearly[[0, 1]] = nearly[[1, 0]]  # two rows swapped: a little slack to repair
    for perm, price in [(nearly, prices), (rng.permutation(250), np.zeros(250))]:
        exact, _ = auction_lap.make_exact(score, price, perm)
        assert value(score, exact) == pytest.approx(best(score), rel=1e-13)
    broken = np.zeros(250, dtype=np.int64)  # not a permutation: scipy solves it
    exact, _ = auction_lap.make_exact(score, prices, broken)
    assert value(score, exact) == pytest.approx(best(score), rel=1e-13)


@pytest.mark.parametrize("kind", ["small_integers", "wide_exponents", "float32_noise"])
def test_random_matrices_property(kind):
    """Many small random matrices, tie-heavy or badly scaled: always scipy's optimum value."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    if kind == "small_integers":
        elements = st.integers(-3, 3).map(float)
    elif kind == "wide_exponents":
        elements = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)
    else:
        elements = st.floats(-1.0, 1.0, width=32, allow_nan=False, allow_infinity=False)
    dtype = np.float32 if kind == "float32_noise" else np.float64

    @settings(max_examples=60, deadline=None)
    @given(st.integers(2, 14).flatmap(lambda n: arrays(dtype, (n, n), elements=elements)))
    def check(score):
        perm, _ = auction_lap.solve(score)
        assert sorted(perm.tolist()) == list(range(len(perm)))
        scale = max(1.0, float(np.abs(score).max())) * len(perm)
        assert value(score, perm) == pytest.approx(best(score), abs=1e-12 * scale)

    check()


def _bad_warm_starts(rng: np.random.Generator, n: int, prices: np.ndarray, perm: np.ndarray):
    out_of_range = perm.copy()
    out_of_range[0] = 10**9
    duplicate = perm.copy()
    duplicate[1] = duplicate[0]
    nan_prices = prices.copy()
    nan_prices[perm[0]] = np.nan
    return [
        (prices, out_of_range),  # would index past the arrays in compiled code
        (prices, -np.ones(n, dtype=np.int64)),
        (prices, duplicate),
        (prices, perm.astype(np.float64)),
        (prices[:-1], perm),
        (nan_prices, perm),
        (prices + 1e15, perm),  # a large common offset costs float64 precision
        (np.arange(n) * -10.0, perm),  # prices of another scale: a warm start would crawl
        (prices * 1000.0, perm),
    ]


def test_unusable_warm_starts_never_crash_or_change_the_answer():
    rng = np.random.default_rng(14)
    n = 120
    first = rng.normal(size=(n, n))
    perm, prices = auction_lap.solve(first)
    score = first + 0.01 * rng.normal(size=(n, n))
    for bad_prices, bad_perm in _bad_warm_starts(rng, n, prices, perm):
        got, _ = auction_lap.solve(score, bad_prices, bad_perm)
        assert sorted(got.tolist()) == list(range(n))
        assert value(score, got) == pytest.approx(best(score), rel=1e-12)
        if len(bad_perm) == n and len(bad_prices) == n:
            exact, _ = auction_lap.make_exact(score, bad_prices, bad_perm)
            assert value(score, exact) == pytest.approx(best(score), rel=1e-12)
    exact, _ = auction_lap.make_exact(score, np.zeros(3), perm)  # wrong-length prices
    assert value(score, exact) == pytest.approx(best(score), rel=1e-12)


def test_extreme_ranges_are_solved():
    huge = np.array([[1.7e308, -1.7e308], [-1.7e308, 1.7e308]])  # the span overflows
    assert auction_lap.solve(huge)[0].tolist() == [0, 1]
    tiny = np.zeros((30, 30))
    tiny[np.arange(30), np.random.default_rng(15).permutation(30)] = 5e-324  # subnormal span
    perm, _ = auction_lap.solve(tiny)
    assert value(tiny, perm) == best(tiny)


def test_dead_units_are_finished_sparsely_and_exactly(monkeypatch):
    """Dead units' rows hold thousands of candidates, yet the shortest-path finish needs
    only a few passes' worth of work: no hand-over to scipy, which took 17-21 s per
    group at width 4096 where the finish takes about 1 s."""
    from benchmarks.activation_matching import layer_scores

    score = layer_scores(1024)[1]  # E[a bᵀ] of two random ReLU layers on the digits
    counts = []
    real = auction_lap._finish
    monkeypatch.setattr(auction_lap, "_finish", lambda *a: counts.append(len(a[-2])) or real(*a))
    monkeypatch.setattr(auction_lap, "_scipy", lambda a: pytest.fail("handed to scipy"))
    perm, _ = auction_lap.solve(score)
    monkeypatch.undo()
    assert counts and counts[0] > 64 * 1024  # more candidates than a sparse finish used to take
    assert sorted(perm.tolist()) == list(range(1024))
    assert value(score, perm) == pytest.approx(best(score), rel=1e-12)


def test_a_finish_over_its_work_budget_hands_over_to_scipy(monkeypatch):
    """Past its budget the finish stops without touching the auction's assignment or
    prices, and scipy's optimum is returned."""
    rng = np.random.default_rng(22)
    score = similarity(rng, 200, 30)
    k = min(auction_lap.LIST_SIZE, 199)
    price, assign = auction_lap._cold_prices(score), np.full(200, -1, dtype=np.int64)
    cand, tau = np.empty((200, k), np.int64), np.empty(200)
    lo, hi = auction_lap._value_range(score)
    eps = auction_lap._schedule(lo, hi, warm=False)
    assert auction_lap._auction(score, price, assign, eps, cand, tau, 200 * 200)
    candidates = auction_lap._listed_candidates(score, price, assign, cand, tau)
    assert (candidates[1] > 0).any()  # rows with slack: the finish has work to do
    before = price.copy(), assign.copy()
    assert not auction_lap._finish(score, price, assign, *candidates, 0)
    assert np.array_equal(price, before[0]) and np.array_equal(assign, before[1])
    monkeypatch.setattr(auction_lap, "_FINISH_WORK", 0)
    perm, _ = auction_lap.solve(score)
    assert value(score, perm) == pytest.approx(best(score), rel=1e-12)
