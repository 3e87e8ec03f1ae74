"""Property-based tests (hypothesis) for I/O round trips and merge-method invariants.

Each property is a defining fact, not a re-computation of our code: a saved file reloads
to the same bytes; a merge of identical models is that model; λ = 0 gives the base;
TIES with density 1 and one model is task arithmetic; a permutation followed by its
inverse changes nothing; weight matching never lowers its own objective.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from core.alignment.spec import invert
from core.alignment.weight_matching import weight_matching
from core.architectures import resolve_architecture
from core.checkpoints import SAFETENSORS_DTYPES, open_checkpoint, save_state_dict
from core.errors import MergerError
from core.methods import REGISTRY
from core.methods.context import TensorContext
from core.methods.params import resolve_params

FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NAME_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00")
names = st.text(NAME_CHARS, min_size=1, max_size=16).filter(
    lambda n: n != "__metadata__" and not n.startswith(("module.", "_orig_mod."))
)
shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)
dtypes = st.sampled_from(sorted(SAFETENSORS_DTYPES.values(), key=str))


def make_tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 100).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(
        max(info.min, -(2**31)), min(info.max, 2**31 - 1), shape, generator=gen, dtype=torch.int64
    ).to(dtype)


states = st.dictionaries(
    names, st.tuples(shapes, dtypes, st.integers(0, 2**16)), min_size=1, max_size=6
).map(lambda d: {k: make_tensor(s, t, seed) for k, (s, t, seed) in d.items()})


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical (NaN payloads and -0.0 included), same dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def reload(path: Path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ckpt:
        return ckpt.state_dict()


@pytest.mark.slow
@FAST
@given(state=states, shard=st.sampled_from([None, 64]))
def test_safetensors_round_trip_is_bit_exact(state, shard):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ("sharded" if shard else "model.safetensors")
        save_state_dict(state, out, shard_size=shard)
        got = reload(out)
    assert list(got) == list(state) or set(got) == set(state)
    assert all(same_bytes(got[k], v) for k, v in state.items())


@FAST
@given(state=states)
def test_torch_pickle_round_trip_is_bit_exact(state):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(state, path)
        got = reload(path)
    assert set(got) == set(state)
    assert all(same_bytes(got[k], v) for k, v in state.items())


def _good_file_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        state = {"a.weight": torch.arange(12.0).reshape(3, 4), "b": torch.tensor([1, 2, 3])}
        save_state_dict(state, Path(tmp) / "m.safetensors", metadata={"k": "v"})
        return (Path(tmp) / "m.safetensors").read_bytes()


GOOD = _good_file_bytes()


@settings(max_examples=60, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, len(GOOD))),
)
def test_damaged_safetensors_never_crash(edits, cut):
    """Any byte damage gives a MergerError or a readable file, never another exception."""
    data = bytearray(GOOD)
    for pos, value in edits:
        data[pos] = value
    if cut is not None:
        data = data[:cut]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        path.write_bytes(bytes(data))
        try:
            reload(path)
        except MergerError as exc:
            assert "m.safetensors" in str(exc) and "\n" not in str(exc)


# -- method invariants -----------------------------------------------------------------
def merge(method: str, inputs, base=None, params=None, per_model=None, seed=0):
    spec = REGISTRY.get(method)
    params = params or {}
    per_model = per_model or [{} for _ in inputs]
    glob = resolve_params(spec, params, "w", 0.0, per_model=False)
    mps = [
        resolve_params(spec, raw, "w", 0.0, per_model=True, fallback=params) for raw in per_model
    ]
    return spec.fn(
        [x.clone() for x in inputs],
        None if base is None else base.clone(),
        glob,
        mps,
        TensorContext("w", seed),
    )


tensors = st.tuples(st.lists(st.integers(1, 6), min_size=1, max_size=3), st.integers(0, 2**16)).map(
    lambda p: torch.randn(p[0], generator=torch.Generator().manual_seed(p[1]))
)
weights = st.floats(0.1, 5.0)
TASK_METHODS = ["task_arithmetic", "ties", "dare_linear", "dare_ties"]


@FAST
@given(x=tensors, n=st.integers(1, 4), ws=st.lists(weights, min_size=4, max_size=4))
def test_linear_of_identical_models_is_the_model(x, n, ws):
    got = merge("linear", [x] * n, per_model=[{"weight": w} for w in ws[:n]])
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-5)


@FAST
@given(
    x=tensors,
    method=st.sampled_from(TASK_METHODS),
    n=st.integers(1, 3),
    density=st.floats(0.05, 1.0),
    lam=st.floats(-2, 2),
    seed=st.integers(0, 100),
)
def test_task_methods_on_copies_of_the_base_give_the_base(x, method, n, density, lam, seed):
    per_model = [
        {"density": density} if "density" in {p.name for p in REGISTRY.get(method).params} else {}
        for _ in range(n)
    ]
    got = merge(method, [x] * n, base=x, params={"lambda": lam}, per_model=per_model, seed=seed)
    torch.testing.assert_close(got, x, rtol=0, atol=1e-6)


@FAST
@given(x=tensors, seed=st.integers(0, 1000), method=st.sampled_from(TASK_METHODS))
def test_lambda_zero_gives_the_base(x, seed, method):
    other = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    got = merge(method, [other, other * 2], base=x, params={"lambda": 0.0}, seed=seed)
    torch.testing.assert_close(got, x, rtol=0, atol=0)


@FAST
@given(x=tensors, seed=st.integers(0, 1000), w=weights, lam=st.floats(-2, 2))
def test_ties_density_one_single_model_is_task_arithmetic(x, seed, w, lam):
    ft = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    ties = merge(
        "ties",
        [ft],
        base=x,
        params={"lambda": lam, "normalize": False},
        per_model=[{"weight": w, "density": 1.0}],
    )
    ta = merge("task_arithmetic", [ft], base=x, params={"lambda": lam}, per_model=[{"weight": w}])
    torch.testing.assert_close(ties, ta, rtol=1e-5, atol=1e-5)
    # with the disjoint mean (the paper's TIES) one model's vector is taken at weight 1
    mean = merge("ties", [ft], base=x, params={"lambda": lam}, per_model=[{"density": 1.0}])
    torch.testing.assert_close(mean, x + lam * (ft - x), rtol=1e-5, atol=1e-5)


@FAST
@given(x=tensors, seed=st.integers(0, 1000), t=st.sampled_from([0.0, 1.0]))
def test_slerp_endpoints_are_the_models(x, seed, t):
    y = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    got = merge("slerp", [y], base=x, params={"t": t})
    torch.testing.assert_close(got, x if t == 0 else y, rtol=1e-4, atol=1e-5)


# -- permutations ------------------------------------------------------------------------
def mlp_state(seed: int, width: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(5, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3)
    )
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@FAST
@given(seed=st.integers(0, 10_000), width=st.integers(2, 12))
def test_permutation_then_its_inverse_is_the_identity(seed, width):
    state = mlp_state(seed, width)
    spec = resolve_architecture("mlp", state).spec
    perms = spec.random(seed)
    inverse = {g: invert(p) for g, p in perms.items()}
    back = spec.apply(spec.apply(state, perms), inverse)
    assert all(torch.equal(back[k], state[k]) for k in state)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), width=st.integers(2, 16))
def test_weight_matching_never_lowers_its_objective(seed, width):
    a, b = mlp_state(seed, width), mlp_state(seed + 1, width)
    spec = resolve_architecture("mlp", a).spec
    result = weight_matching(spec, a, b, max_iter=20, seed=seed)
    history = [result.initial_objective, *result.objective_history]
    scale = max(1.0, max(abs(h) for h in history))
    assert all(
        later >= earlier - 1e-6 * scale
        for earlier, later in zip(history, history[1:], strict=False)
    )
