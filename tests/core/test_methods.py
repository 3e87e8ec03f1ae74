"""Each merge formula against hand-computed cases and its defining properties."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import RecipeError
from core.methods import REGISTRY
from core.methods.context import TensorContext
from core.methods.slerp import slerp


def run(method: str, inputs, base=None, params=None, model_params=None, name="w", seed=0):
    spec = REGISTRY.get(method)
    p = {q.name: q.default for q in spec.params if not q.per_model}
    p.update(params or {})
    mps = []
    for i in range(len(inputs)):
        mp = {q.name: q.default for q in spec.params if q.per_model}
        mp.update((model_params or [{}] * len(inputs))[i])
        mps.append(mp)
    ins = [torch.tensor(x, dtype=torch.float32) for x in inputs]
    b = torch.tensor(base, dtype=torch.float32) if base is not None else None
    return spec.fn(ins, b, p, mps, TensorContext(name, seed))


def test_linear_weighted_mean_by_hand():
    out = run("linear", [[1.0, 2.0], [5.0, 6.0]], model_params=[{"weight": 1}, {"weight": 3}])
    assert torch.allclose(out, torch.tensor([4.0, 5.0]))  # (1+15)/4, (2+18)/4


def test_linear_without_normalize_is_weighted_sum():
    out = run(
        "linear",
        [[1.0], [5.0]],
        params={"normalize": False},
        model_params=[{"weight": 1}, {"weight": 3}],
    )
    assert torch.allclose(out, torch.tensor([16.0]))


def test_linear_weights_summing_to_zero_are_refused_with_normalize():
    weights = [{"weight": 1}, {"weight": -1}]
    with pytest.raises(RecipeError, match="tensor 'w': the model weights .* sum to 0"):
        run("linear", [[1.0], [5.0]], model_params=weights)
    out = run("linear", [[1.0], [5.0]], params={"normalize": False}, model_params=weights)
    assert torch.allclose(out, torch.tensor([-4.0]))


def test_slerp_orthogonal_unit_vectors_stay_on_the_circle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(0.5, a.clone(), b.clone())
    assert torch.allclose(mid, torch.tensor([1, 1]) / math.sqrt(2), atol=1e-6)
    third = slerp(1 / 3, a.clone(), b.clone())
    assert torch.allclose(
        third, torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]), atol=1e-6
    )


def test_slerp_endpoints_and_parallel_fallback():
    a, b = torch.tensor([3.0, 1.0, -2.0]), torch.tensor([-1.0, 4.0, 0.5])
    assert torch.allclose(slerp(0.0, a.clone(), b.clone()), a, atol=1e-6)
    assert torch.allclose(slerp(1.0, a.clone(), b.clone()), b, atol=1e-6)
    # parallel tensors (|cos| > 0.9995): plain linear interpolation of the originals
    out = slerp(0.25, a.clone(), 2 * a.clone())
    assert torch.allclose(out, 0.75 * a + 0.25 * 2 * a)


def test_task_arithmetic_by_hand():
    out = run("task_arithmetic", [[2.0, 2.0], [1.0, 5.0]], base=[1.0, 2.0], params={"lambda": 0.5})
    # tau1 = (1, 0), tau2 = (0, 3): base + 0.5 * (1, 3)
    assert torch.allclose(out, torch.tensor([1.5, 3.5]))


def test_task_arithmetic_negation_removes_the_task():
    out = run("task_arithmetic", [[3.0, -1.0]], base=[1.0, 1.0], params={"lambda": -1.0})
    assert torch.allclose(out, torch.tensor([-1.0, 3.0]))


def test_task_arithmetic_normalize_divides_by_weight_sum():
    out = run(
        "task_arithmetic",
        [[3.0], [5.0]],
        base=[1.0],
        params={"normalize": True},
        model_params=[{"weight": 1.0}, {"weight": 3.0}],
    )
    assert torch.allclose(out, torch.tensor([1 + (2 + 12) / 4]))


def test_ties_sign_election_and_disjoint_mean_by_hand():
    # tau1 = (3, 1), tau2 = (-1, 2): elected signs (+, +); entry 0 keeps only 3,
    # entry 1 averages 1 and 2.
    out = run("ties", [[3.0, 1.0], [-1.0, 2.0]], base=[0.0, 0.0])
    assert torch.allclose(out, torch.tensor([3.0, 1.5]))
    out_sum = run("ties", [[3.0, 1.0], [-1.0, 2.0]], base=[0.0, 0.0], params={"normalize": False})
    assert torch.allclose(out_sum, torch.tensor([3.0, 3.0]))


def test_ties_elects_sign_by_mass_not_count():
    # two small negatives against one large positive: mass says +
    out = run("ties", [[-1.0], [-1.0], [5.0]], base=[0.0])
    assert torch.allclose(out, torch.tensor([5.0]))


def test_ties_trims_to_density_by_magnitude():
    base = [0.0] * 4
    out = run("ties", [[3.0, -1.0, 0.5, -2.0]], base=base, model_params=[{"density": 0.5}])
    assert torch.allclose(out, torch.tensor([3.0, 0.0, 0.0, -2.0]))


def test_dare_density_one_equals_task_arithmetic():
    args = ([[2.0, 2.0], [1.0, 5.0]],)
    a = run("dare_linear", *args, base=[1.0, 2.0])
    b = run("task_arithmetic", *args, base=[1.0, 2.0])
    assert torch.allclose(a, b)


def test_dare_inverse_rescale_keeps_survivors_scaled_and_expectation():
    n = 200_000
    tau = torch.linspace(-1, 1, n) + 0.3
    out = run(
        "dare_linear",
        [tau.tolist()],
        base=[0.0] * n,
        params={"rescale_mode": "inverse"},
        model_params=[{"density": 0.25}],
    )
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.25) < 0.01
    assert torch.allclose(out[kept], tau[kept] / 0.25)
    assert abs(out.mean().item() - tau.mean().item()) < 0.02  # unbiased


def test_dare_l1_rescale_matches_l1_norm_exactly():
    tau = torch.randn(10_000, generator=torch.Generator().manual_seed(1))
    out = run("dare_linear", [tau.tolist()], base=[0.0] * 10_000, model_params=[{"density": 0.3}])
    assert math.isclose(out.abs().sum().item(), tau.abs().sum().item(), rel_tol=1e-4)


def test_dare_is_seeded_per_tensor():
    x = [[float(i) for i in range(1, 101)]]
    a = run("dare_linear", x, base=[0.0] * 100, model_params=[{"density": 0.5}], seed=7)
    b = run("dare_linear", x, base=[0.0] * 100, model_params=[{"density": 0.5}], seed=7)
    c = run("dare_linear", x, base=[0.0] * 100, model_params=[{"density": 0.5}], seed=8)
    d = run(
        "dare_linear", x, base=[0.0] * 100, model_params=[{"density": 0.5}], seed=7, name="other"
    )
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, d)


def test_dare_ties_drops_then_elects():
    # density 1: identical to TIES with rescale irrelevant
    a = run("dare_ties", [[3.0, 1.0], [-1.0, 2.0]], base=[0.0, 0.0], params={"normalize": True})
    assert torch.allclose(a, torch.tensor([3.0, 1.5]))


@pytest.mark.parametrize("name", ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"])
def test_merging_identical_models_returns_that_model(name):
    # idempotence: every method maps (θ, θ, ...) with base θ to θ (task vectors are zero)
    theta = [0.5, -1.25, 3.0]
    base = theta if name != "linear" else None
    out = run(name, [theta, theta], base=base)
    assert torch.allclose(out, torch.tensor(theta))


def test_registry_schema_is_complete():
    for spec in REGISTRY:
        data = spec.to_json()
        assert data["name"] and data["label"] and data["description"]
        for p in data["params"]:
            assert p["help"], f"{spec.name}.{p['name']} lacks help"
            assert p["type"] in ("float", "int", "bool", "choice", "str")
