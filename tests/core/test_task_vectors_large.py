"""Task-vector merges of tensors larger than one chunk: same numbers as the whole-tensor
formulas, progress inside the tensor, and cancel within it.

The references here are written from the formulas with whole-tensor sorts and draws;
the merge itself works a chunk (`CHUNK` values) at a time. The tests shrink the chunk so
that a tensor of a few hundred thousand values spans several: the code paths are the same
as for a tensor of hundreds of millions at the production size."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from core.jobs import Cancelled, Progress
from core.merge import run_merge
from core.methods import REGISTRY, task_vectors
from core.methods.context import TensorContext
from core.methods.trim import kth_largest_magnitude
from core.recipe import Recipe

SMALL_CHUNK = 1 << 16
N = 2 * SMALL_CHUNK + 12345  # three chunks, the last one short


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(task_vectors, "CHUNK", SMALL_CHUNK)


def defaults(method: str, m: int, **per_model) -> tuple[dict, list[dict]]:
    spec = REGISTRY.get(method)
    params = {q.name: q.default for q in spec.params if not q.per_model}
    mps = [{q.name: q.default for q in spec.params if q.per_model} | per_model for _ in range(m)]
    return params, mps


def topk_mask(delta: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest magnitudes; among equal ones the lowest indices (a stable sort)."""
    order = torch.sort(delta.abs(), descending=True, stable=True).indices
    mask = torch.zeros(delta.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask


def models(seed: int = 0, quantized: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(N, generator=gen)
    deltas = [torch.randn(N, generator=gen) * 0.01 for _ in range(3)]
    if quantized:  # few distinct magnitudes: ties at every threshold
        deltas = [torch.round(d * 400) / 400 for d in deltas]
    return base, [base + d for d in deltas]


@pytest.mark.parametrize("quantized", [False, True])
def test_ties_on_a_large_tensor_matches_the_formula(quantized):
    base, fts = models(1, quantized)
    params, mps = defaults("ties", 3, density=0.3)
    weights = [1.0, 0.5, 2.0]
    for mp, w in zip(mps, weights, strict=True):
        mp["weight"] = w
    out = REGISTRY.get("ties").fn(
        [f.clone() for f in fts], base.clone(), params, mps, TensorContext("w")
    )
    k = int(0.3 * N)
    taus = [(f - base) * topk_mask(f - base, k) * w for f, w in zip(fts, weights, strict=True)]
    elected = torch.where(sum(taus) >= 0, 1.0, -1.0)
    agree = [t.sign() == elected for t in taus]
    mixed = sum(torch.where(a, t, 0.0) for a, t in zip(agree, taus, strict=True))
    divisor = sum(a.float() * w for a, w in zip(agree, weights, strict=True))
    expected = base + mixed / torch.where(divisor == 0, 1.0, divisor)
    assert torch.allclose(out, expected, rtol=0, atol=1e-6)
    kept = [int((((f - base) * topk_mask(f - base, k)) != 0).sum()) for f in fts]
    assert all(0 < n <= k for n in kept)


def test_dare_on_a_large_tensor_draws_as_one_tensor():
    """Chunked draws from one generator equal one draw over the whole tensor, so a recipe
    gives the same model whatever the chunk size."""
    base, fts = models(2)
    params, mps = defaults("dare_linear", 3, density=0.4)
    ctx = TensorContext("layer.weight", seed=7)
    out = REGISTRY.get("dare_linear").fn([f.clone() for f in fts], base.clone(), params, mps, ctx)
    expected = base.clone()
    for i, f in enumerate(fts):
        tau = f - base
        kept = tau * (torch.rand(N, generator=ctx.generator(i)) < 0.4)
        expected += kept * (
            tau.abs().sum(dtype=torch.float64) / kept.abs().sum(dtype=torch.float64)
        )
    assert torch.allclose(out, expected, rtol=0, atol=1e-6)


def test_kth_largest_magnitude_is_exact_across_chunks():
    gen = torch.Generator().manual_seed(3)
    for values in (
        torch.randn(300_000, generator=gen),
        torch.randint(-6, 7, (300_000,), generator=gen).float() / 8,  # ties everywhere
        torch.randn(300_000, generator=gen) * 1e-41,  # subnormal float32
        torch.randn(300_000, generator=gen).to(torch.bfloat16),
    ):
        ordered = values.double().abs().sort(descending=True).values
        for k in (1, 7, 150_000, 300_000):
            value, above = kth_largest_magnitude(values, k, chunk=4096)
            assert value == float(ordered[k - 1])
            assert above == int((ordered > ordered[k - 1]).sum())


@pytest.fixture
def big_models(tmp_path):
    base, fts = models(4)
    paths = {"base": tmp_path / "base.safetensors"}
    save_file({"emb": base}, paths["base"])
    for i, f in enumerate(fts[:2]):
        paths[f"ft{i}"] = tmp_path / f"ft{i}.safetensors"
        save_file({"emb": f}, paths[f"ft{i}"])
    return paths


def ties_recipe(paths) -> Recipe:
    return Recipe.from_dict(
        {
            "merge_method": "ties",
            "base_model": str(paths["base"]),
            "models": [{"model": str(paths["ft0"])}, {"model": str(paths["ft1"])}],
            "parameters": {"density": 0.2},
        }
    )


def test_progress_moves_inside_one_large_tensor(big_models, tmp_path):
    seen: list[float] = []
    progress = Progress(lambda e: seen.append(e.done / e.total), min_interval=0)
    run_merge(ties_recipe(big_models), tmp_path / "out.safetensors", progress=progress)
    inside = sorted({f for f in seen if 0 < f < 1})
    assert len(inside) >= 5  # one tensor, yet the bar moved while it was computed
    assert seen == sorted(seen)  # and never went back


def test_cancel_inside_one_large_tensor_leaves_nothing(big_models, tmp_path):
    inside = []

    def on_event(event):
        if 0 < event.done < event.total:
            inside.append(event)
            if len(inside) == 3:
                progress.cancel()

    progress = Progress(on_event, min_interval=0)
    out = tmp_path / "out.safetensors"
    with pytest.raises(Cancelled):
        run_merge(ties_recipe(big_models), out, progress=progress)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "base.safetensors",
        "ft0.safetensors",
        "ft1.safetensors",
    ]
