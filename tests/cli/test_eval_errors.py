"""`merger eval` on broken models, as a CLI trial met them: NaN weights are named by
tensor, and --json is always strict JSON (a missing loss is null, with a note)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from core.architectures.factories import mlp_state
from core.cli import main
from core.cli.output import print_json


def strict_json(text: str):
    """Parse as a strict parser (jq, JavaScript) does: NaN and Infinity are not JSON."""

    def refuse(word: str):
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def write_model(path, *, seed: int = 0, widths=(64, 16, 10), change=None):
    state = mlp_state(list(widths), seed=seed)
    if change is not None:
        change(state)
    save_file(state, str(path))
    return str(path)


def write_data(path, x, y=None):
    arrays = {"x": np.asarray(x, dtype=np.float32)}
    if y is not None:
        arrays["y"] = np.asarray(y, dtype=np.int64)
    np.savez(path, **arrays)
    return str(path)


def digits_like(path, n: int = 40, features: int = 64, labels: bool = True):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n) if labels else None
    return write_data(path, rng.random((n, features)), y)


def nan_at(name: str, index: tuple[int, ...]):
    def change(state):
        state[name][index] = float("nan")

    return change


# -- F3/F8: NaN weights, overflowing outputs ---------------------------------------------
def test_nan_weights_are_named_by_tensor_and_the_json_stays_strict(tmp_path, capsys):
    bad = write_model(tmp_path / "nan.safetensors", change=nan_at("layers.2.weight", (3, 4)))
    good = write_model(tmp_path / "good.safetensors", seed=1)
    data = digits_like(tmp_path / "d.npz")
    assert main(["eval", bad, good, "--data", data, "--json"]) == 1
    rows = strict_json(capsys.readouterr().out)
    assert "tensor 'layers.2.weight': holds NaN" in json.dumps(rows)
    assert main(["eval", bad, good, "--data", data]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"merger: error: {bad}: tensor 'layers.2.weight': holds NaN")
    assert " nan " not in captured.out.lower()
    assert good in captured.out and bad not in captured.out  # the good row is still there


def test_finite_weights_whose_scores_overflow_give_a_null_loss_and_a_note(tmp_path, capsys):
    def huge(state):  # finite, but 1e30 · 1e30 overflows float32 in the second layer
        for name in state:
            state[name].fill_(1e30)

    model = write_model(tmp_path / "huge.safetensors", change=huge)
    data = digits_like(tmp_path / "d.npz", n=12)
    assert main(["eval", model, "--data", data, "--json"]) == 0
    (row,) = strict_json(capsys.readouterr().out)
    assert row["loss"] is None and row["n"] == 12
    assert any("weights are finite" in note and "12 of 12" in note for note in row["notes"])
    assert main(["eval", model, "--data", data]) == 0
    out = capsys.readouterr().out
    assert "n/a" in out and "weights are finite" in out


def test_the_json_writer_refuses_nan_so_it_cannot_come_back():
    with pytest.raises(ValueError):
        print_json({"loss": float("nan")})
    with pytest.raises(ValueError):
        print_json([{"loss": float("inf")}])


def test_a_nan_weight_in_a_buffer_is_caught_too(tmp_path, capsys):
    """Every floating tensor counts, parameters or not (a BatchNorm's running_var)."""
    state = mlp_state([64, 16, 10])
    state["layers.0.bias"] = torch.full((16,), float("inf"))
    path = tmp_path / "inf.safetensors"
    save_file(state, str(path))
    assert main(["eval", str(path), "--data", digits_like(tmp_path / "d.npz"), "--json"]) == 1
    text = json.dumps(strict_json(capsys.readouterr().out))
    assert "tensor 'layers.0.bias'" in text and "16 of 16" in text
