"""Weight matching against the straightforward official loop (the benchmark's baseline).

Ours caches and updates costs incrementally, gathers B in place or from transposed
copies, skips unchanged groups and uses its own solver; the baseline builds every
group's full cost from scratch and solves it with scipy. Both must walk the same path:
the same permutations after the same number of sweeps."""

from __future__ import annotations

import pytest
import torch

from benchmarks.weight_matching import baseline_weight_matching, mlp_case, resnet20_case
from core.alignment.weight_matching import matching_objective, weight_matching


@pytest.mark.parametrize("seed", [0, 3])
def test_resnet20_matches_the_straightforward_loop(seed):
    """3×3 convs between two groups exercise every cost path: B's rows as a view, gathered
    in place, and gathered from its transposed copy; residual groups get incremental
    updates and full recomputes."""
    case = resnet20_case(1, seed)
    assert case is not None
    spec, a, b = case
    ours = weight_matching(spec, a, b, seed=seed)
    base_perms, base_sweeps = baseline_weight_matching(spec, a, b, seed=seed)
    assert ours.sweeps == base_sweeps
    assert all(torch.equal(ours.perms[g], base_perms[g]) for g in spec.groups)
    assert ours.objective_history[-1] == pytest.approx(
        matching_objective(spec, a, b, base_perms), rel=1e-7
    )


def test_mlp_matches_the_straightforward_loop():
    spec, a, b = mlp_case(64, seed=1)
    ours = weight_matching(spec, a, b, seed=1)
    base_perms, base_sweeps = baseline_weight_matching(spec, a, b, seed=1)
    assert ours.sweeps == base_sweeps
    assert all(torch.equal(ours.perms[g], base_perms[g]) for g in spec.groups)


@pytest.mark.parametrize("shape", [(5,), (4, 6), (3, 4, 2, 2), (1, 5, 3, 3, 4)])
def test_gather_helper_equals_index_select(shape):
    """The 2-D/3-D gather (with and without an output buffer, on contiguous tensors and
    transposing views) is index_select."""
    from core.alignment.weight_matching import _select

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen)
    views = [x, x.movedim(0, -1)] if x.dim() > 1 else [x]
    for v in views:
        for dim in range(v.dim()):
            index = torch.randperm(v.shape[dim], generator=gen)[: max(1, v.shape[dim] - 1)]
            expected = v.index_select(dim, index)
            assert torch.equal(_select(v, dim, index), expected)
            buffer = torch.full((x.numel() + 3,), float("nan"))
            assert torch.equal(_select(v, dim, index, buffer), expected)


@pytest.mark.parametrize("shape", [(6, 5, 9), (3, 7, 1), (1, 4, 4), (16, 16, 4)])
def test_compiled_copies_equal_torch(shape):
    """The compiled gathers are the torch expressions they replace, bit for bit, on any
    index (repeats, a subset), and the float64 dot is the float64 sum of exact products."""
    from core.alignment import copy_kernels

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=gen)
    middle = torch.randint(0, shape[1], (shape[1] + 2,), generator=gen)
    out = torch.full((shape[0], len(middle), shape[2]), float("nan"))
    assert torch.equal(copy_kernels.gather_middle(x, middle, out), x[:, middle])
    rows = torch.randint(0, shape[0], (shape[0] + 1,), generator=gen)
    out = torch.full((shape[1], len(rows), shape[2]), float("nan"))
    assert torch.equal(copy_kernels.gather_transposed(x, rows, out), x[rows].permute(1, 0, 2))
    out = torch.full((shape[1], shape[0], shape[2]), float("nan"))
    assert torch.equal(copy_kernels.gather_transposed(x, None, out), x.permute(1, 0, 2))
    y = torch.randn(*shape, generator=gen)
    exact = float((x.double() * y.double()).sum())
    assert copy_kernels.dot64(x, y) == pytest.approx(exact, rel=1e-13, abs=1e-13)


def test_compiled_and_torch_copies_walk_the_same_path(monkeypatch):
    """With numba missing (or on CUDA) the torch gathers run instead: same permutations,
    same objective history (to float32 rounding: torch's sum rounds each product to
    float32 first)."""
    from core.alignment import copy_kernels

    spec, a, b = resnet20_case(1, 2)
    compiled = weight_matching(spec, a, b, seed=2)
    monkeypatch.setattr(copy_kernels, "available", lambda: False)
    plain = weight_matching(spec, a, b, seed=2)
    assert all(torch.equal(compiled.perms[g], plain.perms[g]) for g in spec.groups)
    assert compiled.objective_history == pytest.approx(plain.objective_history, rel=1e-7)


def test_compiled_copies_follow_torchs_thread_count():
    """The app's CPU-threads setting is torch's: the parallel copies keep to it."""
    import numba

    from core.alignment import copy_kernels

    before = torch.get_num_threads()
    x = torch.randn(4, 5, 6)
    try:
        torch.set_num_threads(1)
        copy_kernels.gather_transposed(x, None, torch.empty(5, 4, 6))
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_compiled_copies_are_safe_from_several_threads_on_any_threading_layer():
    """numba's fallback layer (workqueue: no OpenMP or TBB, as on many Macs) aborts the
    process when two threads run parallel kernels at once; the app warms them up on one
    thread while a job may start on another."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import threading, torch\n"
        "from core.alignment import copy_kernels as ck\n"
        "x = torch.randn(64, 64, 9)\n"
        "def work():\n"
        "    out = torch.empty(64, 64, 9)\n"
        "    for _ in range(200):\n"
        "        ck.gather_transposed(x, None, out); ck.gather_middle(x, torch.arange(64), out)\n"
        "threads = [threading.Thread(target=work) for _ in range(3)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "import numba; print(numba.threading_layer())\n"
    )
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "workqueue"
