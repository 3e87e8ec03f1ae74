"""Activation matching's metrics as the command line and the method registry offer them:
`pearson` is passed through, and `correlation` is described as what it computes (the
uncentred cross-moment), not as a Pearson correlation."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from core.alignment.activation_matching import METRICS
from core.architectures.factories import mlp_state
from core.checkpoints import open_checkpoint
from core.cli import main
from core.methods import REGISTRY


def planted(tmp_path):
    """A and B = A with its hidden units permuted and each scaled by its own factor
    (weights in, bias, and the next layer's column divided back): the same function,
    whose units differ from A's by a scale only, which Pearson correlation ignores."""
    a = mlp_state([64, 24, 10], seed=0)
    gen = torch.Generator().manual_seed(1)
    order = torch.randperm(24, generator=gen)
    scale = torch.exp(torch.empty(24).uniform_(-2.0, 2.0, generator=gen))
    b = dict(a)
    b["layers.0.weight"] = a["layers.0.weight"][order] * scale[:, None]
    b["layers.0.bias"] = a["layers.0.bias"][order] * scale
    b["layers.2.weight"] = a["layers.2.weight"][:, order] / scale
    paths = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for path, state in zip(paths, (a, b), strict=True):
        save_file(state, str(path))
    return [str(p) for p in paths], order


def test_pearson_is_offered_and_recovers_a_scaled_permutation(tmp_path, capsys):
    (a, b), order = planted(tmp_path)
    out = tmp_path / "b_al.safetensors"
    args = ["align", a, b, "--by", "activations", "--metric", "pearson", "--data", "digits"]
    assert main([*args, "-o", str(out), "--json"]) == 0
    capsys.readouterr()
    with open_checkpoint(out) as ckpt:
        (perm,) = json.loads(ckpt.metadata["merger_permutations"]).values()
    # B's unit perm[i] is paired with A's unit i: B's unit j is A's unit order[j]
    assert torch.equal(order[torch.tensor(perm)], torch.arange(24))


def test_the_merge_method_takes_pearson_too(tmp_path, capsys):
    (a, b), _ = planted(tmp_path)
    out = tmp_path / "am.safetensors"
    args = ["merge", "--method", "activation_matching", a, b, "--data", "digits"]
    args += ["--set", "metric=pearson", "--set", "lambda=1", "-o", str(out), "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    with open_checkpoint(out) as ckpt, open_checkpoint(a) as ref:
        # at lambda 1 the output is B aligned to A: A's rows, each times its unit's scale
        rows, ref_rows = ckpt.get("layers.0.weight"), ref.get("layers.0.weight")
    ratio = rows / ref_rows
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)


@pytest.mark.parametrize("where", ["cli", "registry"])
def test_correlation_is_described_as_the_cross_moment(where, capsys):
    if where == "cli":
        with pytest.raises(SystemExit):
            main(["align", "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "{correlation,pearson,euclidean}" in text
    else:
        param = REGISTRY.get("activation_matching").param("metric")
        assert tuple(param.choices) == METRICS
        text = param.help
    assert "cross-moment" in text and "Pearson correlation (Git" not in text
    assert "summed over batches of 128" in text  # euclidean's scale follows the batching
