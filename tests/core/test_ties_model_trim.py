"""TIES `trim: model`: one magnitude threshold per task vector over the whole model.

By hand: base zeros, tensors a and b of two entries each.
  τ1: a = [5, 4],  b = [0.5, 0.1]      τ2: a = [-1, 2],  b = [3, -2]
Density 0.5 keeps 2 of each model's 4 entries.
* model-wide: τ1 keeps 5, 4 (b is emptied); τ2 keeps 3 and both entries of magnitude 2
  (a tie at the threshold keeps all tied entries): a = [0, 2], b = [3, -2].
  Elect + disjoint mean: a = [5, (4 + 2) / 2] = [5, 3]; b = [3, -2].
* per tensor: τ1 a = [5, 0], b = [0.5, 0]; τ2 a = [0, 2], b = [3, 0].
  a = [5, 2]; b = [(0.5 + 3) / 2, 0] = [1.75, 0].
"""

from __future__ import annotations

import pytest
import torch

from core.checkpoints import open_checkpoint, save_state_dict
from core.cli import main
from core.errors import RecipeError
from core.merge import run_merge
from core.methods.trim import magnitude_thresholds
from core.recipe import ModelEntry, Recipe


@pytest.fixture
def models(tmp_path):
    states = {
        "base": {"a": [0.0, 0.0], "b": [0.0, 0.0]},
        "ft1": {"a": [5.0, 4.0], "b": [0.5, 0.1]},
        "ft2": {"a": [-1.0, 2.0], "b": [3.0, -2.0]},
    }
    paths = {}
    for name, state in states.items():
        paths[name] = tmp_path / f"{name}.safetensors"
        save_state_dict({k: torch.tensor(v) for k, v in state.items()}, paths[name])
    return paths


def ties(models, trim: str, density=0.5) -> Recipe:
    return Recipe(
        "ties",
        (ModelEntry(str(models["ft1"])), ModelEntry(str(models["ft2"]))),
        base_model=str(models["base"]),
        parameters={"density": density, "trim": trim},
    )


def merged(path) -> dict[str, list[float]]:
    with open_checkpoint(path) as ckpt:
        return {k: v.tolist() for k, v in ckpt.state_dict().items()}


@pytest.mark.parametrize(
    ("trim", "expected"),
    [
        ("model", {"a": [5.0, 3.0], "b": [3.0, -2.0]}),
        ("tensor", {"a": [5.0, 2.0], "b": [1.75, 0.0]}),
    ],
)
def test_model_and_tensor_trim_by_hand(models, tmp_path, trim, expected):
    out = tmp_path / f"{trim}.safetensors"
    run_merge(ties(models, trim), out)
    assert merged(out) == expected


def test_the_cli_takes_it_and_the_output_records_it(models, tmp_path):
    out = tmp_path / "cli.safetensors"
    args = ["merge", "--method", "ties", "--base", str(models["base"]), str(models["ft1"])]
    args += [str(models["ft2"]), "--set", "density=0.5", "--set", "trim=model", "-o", str(out)]
    assert main([*args, "--quiet"]) == 0
    assert merged(out) == {"a": [5.0, 3.0], "b": [3.0, -2.0]}
    with open_checkpoint(out) as ckpt:
        assert "trim: model" in ckpt.metadata["merger_recipe"]


def test_a_density_per_tensor_is_refused_with_model_trim(models, tmp_path):
    recipe = ties(models, "model", density=[0.2, 0.8])  # a gradient over layers
    with pytest.raises(RecipeError, match="one density per model"):
        run_merge(recipe, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("density", [0.0, 1e-4, 0.013, 0.2, 0.5, 0.999, 1.0])
def test_thresholds_keep_the_largest_magnitudes_over_all_tensors(density):
    """Against a sort of everything at once: the ⌊n·density⌋-th largest magnitude."""
    gen = torch.Generator().manual_seed(1)
    tensors = [[torch.randn(s, generator=gen) * 10**e for e in (-3, 0)] for s in (17, 300, 4096)]
    tensors.append([torch.zeros(5), torch.full((5,), -1e-40)])  # zeros and subnormals

    def passes(label):
        yield from tensors

    thresholds = magnitude_thresholds(passes, [density, density])
    for i in range(2):
        everything = torch.cat([t[i] for t in tensors]).abs().sort(descending=True).values
        r = int(len(everything) * density)
        if r == 0:
            assert thresholds[i] == float("inf")
        elif r >= len(everything):
            assert thresholds[i] == 0.0
        else:
            assert thresholds[i] == float(everything[r - 1])
            assert int((everything >= thresholds[i]).sum()) == r  # no ties in random data


def test_one_progress_bar_spans_both_passes_and_the_merge(models, tmp_path):
    """The bar ran 0→88 %, fell to 0, ran again, fell again: now it never goes back."""
    from core.jobs import Progress

    events = []
    run_merge(
        ties(models, "model"),
        tmp_path / "m.safetensors",
        progress=Progress(events.append, min_interval=0),
    )
    fractions = [e.done / e.total for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    first_pass = [f for e, f in zip(events, fractions, strict=True) if "pass 1 of 2" in e.message]
    second_pass = [f for e, f in zip(events, fractions, strict=True) if "pass 2 of 2" in e.message]
    assert first_pass and max(first_pass) < 1 / 3 <= min(second_pass) and max(second_pass) < 2 / 3
