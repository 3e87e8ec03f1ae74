"""Checkpoints whose every name carries a wrapper's prefix the readers do not drop (a
`{"state_dict": {"model.…"}}` saved without Lightning's marker, a `net.`): align, both
alignment merges and eval read them as the family the names fit without it, and outputs
keep the file's names. DataParallel's `module.`, which the readers drop, works too."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.architectures import checkpoint_architecture_problem, resolve_architecture
from core.architectures.factories import vgg_state
from core.checkpoints import open_checkpoint
from core.cli import main


def vgg(seed: int) -> dict[str, torch.Tensor]:
    state = vgg_state([4, "M", 6, "M"], batchnorm=True, hidden=(5,), seed=seed)
    for name, value in state.items():  # non-trivial statistics, as a trained model has
        if name.endswith("running_var"):
            value.uniform_(0.5, 2.0)
        elif name.endswith("running_mean"):
            value.normal_()
    return state


def save_wrapped(path, state, prefix: str) -> str:
    torch.save({"state_dict": {f"{prefix}{k}": v for k, v in state.items()}, "epoch": 3}, path)
    return str(path)


def images(path, n: int = 64) -> str:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3, 4, 4)).astype(np.float32)
    np.savez(path, x=x, y=rng.integers(0, 10, n))
    return str(path)


def read(path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ckpt:
        return ckpt.state_dict()


@pytest.fixture
def pair(tmp_path):
    a, b = vgg(1), vgg(2)
    return (
        save_wrapped(tmp_path / "a.ckpt", a, "model."),
        save_wrapped(tmp_path / "b.ckpt", b, "model."),
        images(tmp_path / "img.npz"),
        b,
    )


def test_align_reads_a_model_prefix_without_lightnings_marker(pair, tmp_path, capsys):
    a, b, data, plain_b = pair
    out = tmp_path / "b_al.safetensors"
    assert main(["align", a, b, "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["architecture"] == "vgg"
    assert any("prefix 'model.'" in note for note in summary["notes"])
    aligned = read(out)
    assert set(aligned) == {f"model.{k}" for k in plain_b}  # the file's names, kept
    # the same function as B: run both as the plain family
    arch = resolve_architecture("vgg", plain_b)
    unwrapped = {k.removeprefix("model."): v for k, v in aligned.items()}
    x = torch.randn(8, 3, 4, 4)
    assert torch.allclose(arch.build(unwrapped)(x), arch.build(plain_b)(x), atol=1e-5)
    assert not torch.equal(unwrapped["features.0.weight"], plain_b["features.0.weight"])


@pytest.mark.parametrize("method", ["weight_matching", "activation_matching"])
def test_alignment_merges_read_it_and_reestimate_batchnorm(pair, tmp_path, capsys, method):
    a, b, data, plain_b = pair
    out = tmp_path / f"{method}.safetensors"
    args = ["merge", "--method", method, a, b, "--data", data, "-o", str(out), "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "prefix 'model.'" in text and "re-estimated BatchNorm statistics of 2 layer(s)" in text
    merged = read(out)
    assert set(merged) == {f"model.{k}" for k in plain_b}
    # re-estimated statistics are the data's, not an average of A's and B's
    assert not torch.allclose(
        merged["model.features.1.running_var"],
        0.5 * (vgg(1)["features.1.running_var"] + plain_b["features.1.running_var"]),
    )


def test_eval_reads_it_and_says_so(pair, capsys):
    a, b, data, plain_b = pair
    assert main(["eval", a, b, "--data", data, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["architecture"] for r in rows] == ["vgg", "vgg"]
    assert all(any("prefix 'model.'" in n for n in r["notes"]) for r in rows)


def test_the_windows_check_accepts_it(pair):
    a, *_ = pair
    assert checkpoint_architecture_problem(None, a) is None
    assert checkpoint_architecture_problem("vgg", a) is None


@pytest.mark.parametrize("prefix", ["module.", "model.module.", "net."])
def test_other_prefixes_align_too(tmp_path, capsys, prefix):
    """DataParallel's `module.` is dropped when read; a `module.` inside `model.`, or any
    other attribute (`net.`), is found by the architecture check."""
    a = save_wrapped(tmp_path / "a.pt", vgg(1), prefix)
    b = save_wrapped(tmp_path / "b.pt", vgg(2), prefix)
    out = tmp_path / "b_al.safetensors"
    assert main(["align", a, b, "-o", str(out), "--quiet"]) == 0
    names = set(read(out))
    kept = "" if prefix == "module." else prefix  # the reader drops DataParallel's alone
    assert names == {f"{kept}{k}" for k in vgg(2)}
    capsys.readouterr()


def test_a_prefixed_model_that_fits_nothing_names_the_prefix(tmp_path, capsys):
    state = {"model.embed.weight": torch.zeros(100, 8, 3), "model.head.weight": torch.zeros(4, 8)}
    a = save_wrapped(tmp_path / "a.pt", state, "")
    b = save_wrapped(tmp_path / "b.pt", state, "")
    assert main(["align", a, b, "-o", str(tmp_path / "o.safetensors"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "with or without the prefix 'model.' that every name carries" in err
    assert "tensor 'embed.weight'" in err
