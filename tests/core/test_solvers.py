"""Assignment solvers: exactness against brute force and scipy, warm starts, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from core.alignment.solvers import (
    available_solvers,
    pick_solver,
    solve_assignment,
    solve_assignment_warm,
)
from core.errors import MergerError


def total(score: np.ndarray, perm: np.ndarray) -> float:
    return float(score[np.arange(len(perm)), perm].sum())


def brute_force_best(score: np.ndarray, maximize: bool = True) -> float:
    n, m = score.shape
    values = [total(score, np.array(p)) for p in itertools.permutations(range(m), n)]
    return max(values) if maximize else min(values)


def assert_is_permutation(perm: np.ndarray, m: int) -> None:
    assert perm.dtype == np.int64
    assert len(set(perm.tolist())) == len(perm)
    assert perm.min() >= 0 and perm.max() < m


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("maximize", [True, False])
def test_scipy_matches_brute_force(seed, maximize):
    score = np.random.default_rng(seed).normal(size=(6, 6))
    perm = solve_assignment(score, maximize=maximize, solver="scipy")
    assert_is_permutation(perm, 6)
    assert total(score, perm) == pytest.approx(brute_force_best(score, maximize))


def test_planted_permutation_is_found():
    rng = np.random.default_rng(0)
    planted = rng.permutation(50)
    score = rng.uniform(-1, 0, size=(50, 50))
    score[np.arange(50), planted] = 5.0
    assert np.array_equal(solve_assignment(score), planted)


def test_n1_ties_and_torch_input():
    assert solve_assignment(np.array([[-3.0]])).tolist() == [0]
    ties = np.ones((4, 4))
    perm = solve_assignment(ties)
    assert_is_permutation(perm, 4)
    score = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    assert solve_assignment(score).tolist() == [1, 0]
    assert solve_assignment(score, maximize=False).tolist() == [0, 1]


def test_rectangular_rows_get_distinct_columns():
    score = np.random.default_rng(1).normal(size=(3, 5))
    perm = solve_assignment(score, solver="scipy")
    assert_is_permutation(perm, 5)
    assert total(score, perm) == pytest.approx(brute_force_best(score))


def test_bad_shapes_and_values_are_clear_errors():
    with pytest.raises(MergerError, match="columns as rows"):
        solve_assignment(np.zeros((5, 3)))
    with pytest.raises(MergerError, match="2-D"):
        solve_assignment(np.zeros(5))
    with pytest.raises(MergerError, match="NaN"):
        solve_assignment(np.array([[np.nan, 1.0], [0.0, 1.0]]), solver="scipy")
    with pytest.raises(MergerError, match="unknown assignment solver"):
        solve_assignment(np.zeros((2, 2)), solver="magic")


def test_warm_start_gives_the_same_optimum_and_valid_prices():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(80, 40)), rng.normal(size=(80, 40))
    score = a @ b.T
    perm, prices = solve_assignment_warm(score, solver="scipy")
    # Dual feasibility of the returned prices: the assigned column is each row's best.
    reduced = score - prices[None, :]
    assert np.all(reduced.max(axis=1) <= reduced[np.arange(80), perm] + 1e-9)
    # A perturbed matrix solved warm and cold reaches the same optimal value.
    perturbed = score + 0.05 * rng.normal(size=score.shape)
    warm = solve_assignment(perturbed, warm_start=prices, solver="scipy")
    cold = solve_assignment(perturbed, solver="scipy")
    assert total(perturbed, warm) == pytest.approx(total(perturbed, cold), abs=1e-9)
    # Wrong-length prices are ignored rather than trusted.
    odd = solve_assignment(perturbed, warm_start=np.zeros(3), solver="scipy")
    assert total(perturbed, odd) == pytest.approx(total(perturbed, cold), abs=1e-9)


def test_solver_choice():
    assert {"scipy", "auction", "auction-torch"} <= set(available_solvers())
    assert pick_solver(10, "cpu") == "scipy"  # tiny: scipy takes microseconds
    assert pick_solver(100_000, "cpu") == "auction"
    assert pick_solver(100_000, "cpu", square=False) == "scipy"
    if not torch.cuda.is_available():
        assert pick_solver(100_000, "auto") == "auction"
        with pytest.raises(MergerError, match="CUDA"):
            pick_solver(10, "cuda")


def scipy_best(score: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(score, maximize=True)
    return float(score[rows, cols].sum())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [2, 3, 17, 120])
def test_auction_is_exact_on_integer_scores_without_repair(seed, n):
    from core.alignment.solvers import auction_assignment

    score = np.random.default_rng(seed).integers(-40, 40, size=(n, n)).astype(np.float64)
    perm, _ = auction_assignment(torch.tensor(score), exact=False)
    assert_is_permutation(perm, n)
    assert total(score, perm) == scipy_best(score)


@pytest.mark.parametrize("solver", ["auction", "auction-torch"])
@pytest.mark.parametrize(
    "kind", ["gaussian", "low_rank_similarity", "planted", "ties", "negative", "huge_range"]
)
def test_auction_matches_scipy_on_structured_float_scores(kind, solver):
    rng = np.random.default_rng(5)
    n = 90
    if kind == "gaussian":
        score = rng.normal(size=(n, n))
    elif kind == "low_rank_similarity":
        score = rng.normal(size=(n, 8)) @ rng.normal(size=(n, 8)).T
    elif kind == "planted":
        score = rng.normal(size=(n, n)) * 0.1
        score[np.arange(n), rng.permutation(n)] += 1.0
    elif kind == "ties":
        score = np.repeat(rng.integers(0, 3, size=(n, 1)), n, axis=1).astype(float)
        score[:, : n // 2] += 1.0  # many equal optima
    elif kind == "negative":
        score = -np.abs(rng.normal(size=(n, n))) - 1e6
    else:
        score = rng.normal(size=(n, n)) * np.logspace(-6, 6, n)[None, :]
    perm = solve_assignment(score, solver=solver)
    assert_is_permutation(perm, n)
    assert total(score, perm) == pytest.approx(scipy_best(score), rel=1e-12, abs=1e-9)
    minimized = solve_assignment(score, solver=solver, maximize=False)
    assert total(score, minimized) == pytest.approx(-scipy_best(-score), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("solver", ["auction", "auction-torch"])
def test_auction_small_sizes_warm_start_and_errors(solver):
    assert solve_assignment(np.array([[2.5]]), solver=solver).tolist() == [0]
    assert solve_assignment(np.array([[0.0, 1.0], [1.0, 0.0]]), solver=solver).tolist() == [1, 0]
    rng = np.random.default_rng(3)
    score = rng.normal(size=(60, 60))
    perm, prices = solve_assignment_warm(score, solver=solver)
    perturbed = score + 0.01 * rng.normal(size=(60, 60))
    again, _ = solve_assignment_warm(perturbed, solver=solver, prices=prices, previous=perm)
    assert_is_permutation(again, 60)
    assert total(score, perm) == pytest.approx(scipy_best(score))
    assert total(perturbed, again) == pytest.approx(scipy_best(perturbed))
    with pytest.raises(MergerError, match="square"):
        solve_assignment(np.zeros((2, 3)), solver=solver)
    with pytest.raises(MergerError, match="NaN"):
        solve_assignment(np.array([[np.inf, 1.0], [0.0, 1.0]]), solver=solver)
    with pytest.raises(MergerError, match="NaN"):
        solve_assignment(np.array([[np.nan, 1.0], [0.0, 1.0]]), solver=solver)


def test_torch_dtypes_devices_and_unavailable_cuda():
    score = torch.randn(80, 80)
    expected = scipy_best(score.double().numpy())
    for dtype in (torch.bfloat16, torch.float16, torch.int64):
        tensor = (score * 10).to(dtype)
        perm = solve_assignment(tensor)  # the default: the compiled auction
        assert total(tensor.double().numpy(), perm) == pytest.approx(
            scipy_best(tensor.double().numpy())
        )
    assert total(score.numpy(), solve_assignment(score, device=torch.device("cpu"))) == (
        pytest.approx(expected)
    )
    if not torch.cuda.is_available():
        with pytest.raises(MergerError, match="CUDA"):
            solve_assignment(score, solver="auction-cuda", device="cpu")


def test_torch_auction_survives_unusable_warm_prices():
    rng = np.random.default_rng(16)
    score = rng.normal(size=(60, 60))
    for prices in (np.full(60, np.nan), np.arange(60) * 1e6, np.zeros(3)):
        perm, _ = solve_assignment_warm(score, solver="auction-torch", prices=prices)
        assert total(score, perm) == pytest.approx(scipy_best(score))
