"""Weight matching: planted permutations, monotone objective, determinism, cancel."""

from __future__ import annotations

import itertools

import pytest
import torch

from core.alignment.spec import PermutationSpec, invert
from core.alignment.weight_matching import (
    cost_tensors,
    matching_objective,
    weight_matching,
)
from core.errors import Cancelled, MergerError
from core.jobs import Progress


def mlp_spec(depth: int) -> PermutationSpec:
    """Hand-written spec of an MLP l0..l{depth} with `depth` hidden layers."""
    groups = {
        f"P{i}": [(f"l{i}.weight", 0), (f"l{i}.bias", 0), (f"l{i + 1}.weight", 1)]
        for i in range(depth)
    }
    return PermutationSpec(groups)


def mlp_state(sizes: list[int], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        state[f"l{i}.weight"] = torch.randn(fan_out, fan_in, generator=gen) / fan_in**0.5
        state[f"l{i}.bias"] = torch.randn(fan_out, generator=gen) * 0.1
    return state


def mlp_forward(state: dict[str, torch.Tensor], x: torch.Tensor, depth: int) -> torch.Tensor:
    for i in range(depth):
        x = torch.relu(x @ state[f"l{i}.weight"].T + state[f"l{i}.bias"])
    return x @ state[f"l{depth}.weight"].T + state[f"l{depth}.bias"]


def conv_residual_spec() -> PermutationSpec:
    """conv (C,3,3,3) -> BN -> square 1x1 skip conv (C,C) on the same units -> linear head.

    'skip.weight' carries group P on both axes, 'head.weight' mixes P (axis 1) and Q (axis 0),
    'out.weight' has Q on axis 1: tensors permuted on two axes by different groups.
    """
    return PermutationSpec(
        {
            "P": [
                ("conv.weight", 0),
                ("conv.bias", 0),
                ("bn.weight", 0),
                ("bn.bias", 0),
                ("bn.running_mean", 0),
                ("bn.running_var", 0),
                ("skip.weight", 0),
                ("skip.weight", 1),
                ("head.weight", 1),
            ],
            "Q": [("head.weight", 0), ("head.bias", 0), ("out.weight", 1)],
        }
    )


def conv_residual_state(c: int, h: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(c, 3, 3, 3, generator=gen),
        "conv.bias": torch.randn(c, generator=gen),
        "bn.weight": torch.rand(c, generator=gen) + 0.5,
        "bn.bias": torch.randn(c, generator=gen),
        "bn.running_mean": torch.randn(c, generator=gen),
        "bn.running_var": torch.rand(c, generator=gen) + 0.1,
        "bn.num_batches_tracked": torch.tensor(7),
        "skip.weight": torch.randn(c, c, generator=gen),
        "head.weight": torch.randn(h, c, generator=gen),
        "head.bias": torch.randn(h, generator=gen),
        "out.weight": torch.randn(4, h, generator=gen),
    }


def test_recovers_planted_permutation_mlp():
    spec = mlp_spec(3)
    a = mlp_state([20, 32, 48, 16, 5], seed=0)
    spec.infer_sizes(a)
    planted = spec.random(seed=3)
    b = spec.apply(a, planted)
    result = weight_matching(spec, a, b, seed=1)
    for g in planted:
        assert torch.equal(result.perms[g], invert(planted[g]))
    aligned = spec.apply(b, result.perms)
    for t in a:
        assert torch.equal(aligned[t], a[t])
    best = sum(float((a[t].double() ** 2).sum()) for t in cost_tensors(spec, a))
    assert result.objective_history[-1] == pytest.approx(best, rel=1e-6)


def test_recovers_planted_permutation_conv_with_square_skip():
    spec = conv_residual_spec()
    a = conv_residual_state(c=12, h=9, seed=0)
    spec.infer_sizes(a)
    planted = spec.random(seed=11)
    b = spec.apply(a, planted)
    result = weight_matching(spec, a, b, seed=2)
    for g in planted:
        assert torch.equal(result.perms[g], invert(planted[g]))


def test_objective_never_decreases_and_matches_direct_formula():
    spec = mlp_spec(3)
    a = mlp_state([30, 40, 40, 40, 6], seed=0)
    b = mlp_state([30, 40, 40, 40, 6], seed=1)
    spec.infer_sizes(a)
    result = weight_matching(spec, a, b, seed=0)
    history = [result.initial_objective, *result.objective_history]
    assert all(y >= x - 1e-9 for x, y in itertools.pairwise(history))
    assert history[-1] > history[0]
    aligned = spec.apply(b, result.perms)
    direct = sum(float((a[t].double() * aligned[t].double()).sum()) for t in cost_tensors(spec, a))
    assert "l3.bias" not in cost_tensors(spec, a)  # never permuted: a constant, left out
    assert result.objective_history[-1] == pytest.approx(direct, rel=1e-6)
    assert result.sweeps == len(result.objective_history)


def test_objective_monotone_with_self_coupled_group():
    spec = conv_residual_spec()
    a = conv_residual_state(c=10, h=7, seed=0)
    b = conv_residual_state(c=10, h=7, seed=1)
    spec.infer_sizes(a)
    result = weight_matching(spec, a, b, seed=0)
    history = [result.initial_objective, *result.objective_history]
    assert all(y >= x - 1e-9 for x, y in itertools.pairwise(history))
    assert history[-1] == pytest.approx(matching_objective(spec, a, b, result.perms), rel=1e-6)


def test_result_is_coordinatewise_optimal_by_brute_force():
    """At convergence no single group's perm can be improved: check all n! perms."""
    spec = mlp_spec(2)
    a = mlp_state([4, 5, 5, 3], seed=0)
    b = mlp_state([4, 5, 5, 3], seed=1)
    spec.infer_sizes(a)
    result = weight_matching(spec, a, b, seed=0)
    found = matching_objective(spec, a, b, result.perms)
    for g in spec.groups:
        for p in itertools.permutations(range(5)):
            trial = dict(result.perms)
            trial[g] = torch.tensor(p)
            assert matching_objective(spec, a, b, trial) <= found + 1e-9


def test_seeded_determinism_and_init_perms():
    spec = mlp_spec(3)
    a = mlp_state([16, 24, 24, 24, 4], seed=0)
    b = mlp_state([16, 24, 24, 24, 4], seed=1)
    spec.infer_sizes(a)
    r1 = weight_matching(spec, a, b, seed=7)
    r2 = weight_matching(spec, a, b, seed=7)
    assert all(torch.equal(r1.perms[g], r2.perms[g]) for g in spec.groups)
    assert r1.objective_history == r2.objective_history
    # Starting from a converged result, the first sweep cannot improve: stops at once.
    r3 = weight_matching(spec, a, b, seed=7, init_perms=r1.perms)
    assert r3.sweeps == 1
    assert all(torch.equal(r1.perms[g], r3.perms[g]) for g in spec.groups)


def test_aligned_model_computes_the_same_function():
    spec = mlp_spec(2)
    a = mlp_state([8, 16, 16, 3], seed=0)
    b = mlp_state([8, 16, 16, 3], seed=1)
    spec.infer_sizes(a)
    result = weight_matching(spec, a, b)
    x = torch.randn(5, 8)
    aligned = spec.apply(b, result.perms)
    torch.testing.assert_close(mlp_forward(aligned, x, 2), mlp_forward(b, x, 2))


def test_bn_statistics_and_integer_buffers_skipped_in_cost():
    spec = conv_residual_spec()
    state = conv_residual_state(c=6, h=5, seed=0)
    names = cost_tensors(spec, state)
    assert "bn.running_mean" not in names and "bn.running_var" not in names
    assert "bn.weight" in names and "skip.weight" in names
    # Only the BN statistics differ: they must not move the matching away from identity.
    spec.infer_sizes(state)
    other = dict(state)
    other["bn.running_mean"] = state["bn.running_mean"].flip(0)
    result = weight_matching(spec, state, other)
    assert all(torch.equal(p, torch.arange(len(p))) for p in result.perms.values())


def test_progress_reports_each_sweep_and_cancel_stops_promptly():
    spec = mlp_spec(3)
    a = mlp_state([16, 32, 32, 32, 4], seed=0)
    b = mlp_state([16, 32, 32, 32, 4], seed=1)
    spec.infer_sizes(a)
    events = []
    weight_matching(spec, a, b, progress=Progress(events.append, min_interval=0.0))
    messages = [e.message for e in events]
    assert messages[:3] == [
        "sweep 1: group 1 of 3",
        "sweep 1: group 2 of 3",
        "sweep 1: group 3 of 3",
    ]
    assert messages[3].startswith("sweep 1: objective ")
    # the bar moves through the first sweep's steps (the costly part: a time estimate
    # from it is fair), then follows convergence: groups that no longer move; it never
    # goes back and is full at the end (the sweep count out of max_iter would stop at a
    # few percent)
    fractions = [e.fraction for e in events]
    assert fractions[:3] == pytest.approx([0.0, 0.7 / 3, 1.4 / 3])
    settled = int(events[3].message.split(", ")[1].split(" of ")[0])
    assert fractions[3] == pytest.approx(0.7 + 0.3 * settled / 3)
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0 and events[-1].message.endswith("3 of 3 groups settled")
    # the first sweep's steps can be timed; the sweeps after it run until one changes
    # nothing, so no front may promise a time left for them
    assert [e.open_ended for e in events[:3]] == [False] * 3
    assert all(e.open_ended for e in events[3:])

    seen = []
    progress = Progress(min_interval=0.0)

    def cancel_on_first(event):
        seen.append(event)
        progress.cancel()

    progress._callback = cancel_on_first
    with pytest.raises(Cancelled):
        weight_matching(spec, a, b, progress=progress)
    assert len(seen) == 1

    early = Progress()
    early.cancel()
    with pytest.raises(Cancelled):
        weight_matching(spec, a, b, progress=early)


def test_shape_mismatch_is_a_clear_error():
    spec = mlp_spec(1)
    a = mlp_state([4, 6, 2], seed=0)
    b = mlp_state([4, 7, 2], seed=0)
    spec.infer_sizes(a)
    with pytest.raises(MergerError, match="l0.weight"):
        weight_matching(spec, a, b)


def test_conv_flattened_into_linear_blocks_are_matched_whole():
    """A VGG whose last conv map (2×2) is flattened into the classifier: each channel owns
    4 consecutive classifier inputs. A planted permutation is recovered exactly, and the
    aligned model computes B's function."""
    from core.architectures import resolve_architecture
    from core.architectures.factories import vgg_state

    state_a = vgg_state((8, "M", 16, "M"), hidden=(32,), side=2, seed=1)
    arch = resolve_architecture("vgg", state_a)
    spec = arch.spec
    assert any(b > 1 for b in spec.blocks.values())
    planted = spec.random(seed=3)
    state_b = spec.apply(state_a, planted)
    result = weight_matching(spec, state_a, state_b, seed=0)
    for g, p in result.perms.items():
        assert torch.equal(p, invert(planted[g])), g
    aligned = spec.apply(state_b, result.perms)
    x = torch.randn(4, *arch.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(arch.build(aligned)(x), arch.build(state_b)(x), atol=1e-5)
    # and two unrelated models: the matching still runs and raises the objective
    other = vgg_state((8, "M", 16, "M"), hidden=(32,), side=2, seed=2)
    result = weight_matching(spec, state_a, other, seed=0)
    assert result.objective_history[-1] >= result.initial_objective


def test_non_finite_weights_are_named_with_their_model_and_tensor():
    spec = PermutationSpec({"P": [("l0.weight", 0), ("l1.weight", 1)]})
    a = {"l0.weight": torch.randn(6, 3), "l1.weight": torch.randn(2, 6)}
    b = {k: v.clone() for k, v in a.items()}
    b["l1.weight"][1, 4] = float("inf")
    with pytest.raises(MergerError, match="model B has NaN or infinite") as info:
        weight_matching(spec, a, b)
    assert info.value.tensor == "l1.weight"


def test_cancel_is_answered_inside_a_long_product(monkeypatch):
    """A 4096-wide group's product takes most of a second: it runs in slices with a cancel
    check between them (here made small), so Cancel does not wait for the whole step."""
    import core.alignment.weight_matching as wm

    monkeypatch.setattr(wm, "_FLOPS_PER_SLICE", 2 * 32 * 32 * 4)  # 4 rows per slice
    spec = mlp_spec(3)
    a = mlp_state([16, 32, 32, 32, 4], seed=0)
    b = mlp_state([16, 32, 32, 32, 4], seed=1)
    spec.infer_sizes(a)
    progress = Progress(min_interval=0.0)
    checks = []
    real_check = progress.check

    def counting_check():
        message = progress.last.message if progress.last else ""
        checks.append(message)
        if checks.count("sweep 1: group 1 of 3") == 3:  # inside the first step's products
            progress.cancel()
        real_check()

    progress.check = counting_check
    with pytest.raises(Cancelled):
        wm.weight_matching(spec, a, b, progress=progress)
    assert checks[-1] == "sweep 1: group 1 of 3"  # answered in the step that was running


def test_a_model_with_nothing_to_permute_reports_progress_and_finishes():
    """One Linear layer: no hidden units, no groups; the bar is full, nothing divides by 0."""
    spec = PermutationSpec({}).infer_sizes({})
    a, b = {"w": torch.ones(2, 3)}, {"w": torch.zeros(2, 3)}
    events = []
    result = weight_matching(spec, a, b, progress=Progress(events.append, min_interval=0.0))
    assert result.perms == {} and result.converged
    assert events and events[-1].fraction == 1.0


def test_a_merge_by_weight_matching_fills_the_bar_once(tmp_path):
    """Writing the result restarted the bar at 0 (96% → 50% in the window, '3:41 left'):
    the matching and the writing now share one bar that never goes back."""
    from safetensors.torch import save_file

    from core.merge import run_merge
    from core.recipe import Recipe

    for name, seed in (("a", 0), ("b", 1)):
        save_file(mlp_state([16, 32, 32, 32, 4], seed=seed), tmp_path / f"{name}.safetensors")
    recipe = Recipe.from_yaml(
        f"merge_method: weight_matching\nmodels: [{tmp_path / 'a.safetensors'}, "
        f"{tmp_path / 'b.safetensors'}]\narch: mlp\n"
    )
    events = []
    run_merge(recipe, tmp_path / "m.safetensors", progress=Progress(events.append, min_interval=0))
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    writing = [f for e, f in zip(events, fractions, strict=True) if e.message.startswith("writing")]
    sweeps = [f for e, f in zip(events, fractions, strict=True) if e.message.startswith("sweep")]
    assert writing and sweeps and max(sweeps) <= min(writing)
