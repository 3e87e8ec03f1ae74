"""`merger eval` on broken models and unusable data, as a CLI trial met them: NaN weights
are named by tensor, --json is always strict JSON, a data problem is one error said once,
and one model's failure stays in its own row with the documented error object."""

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
    broken, fine = strict_json(capsys.readouterr().out)  # the order given on the command line
    assert broken["model"] == bad and set(broken) == {"model", "error"}
    error = broken["error"]
    assert error["kind"] == "error" and error["file"] == bad
    assert error["tensor"] == "layers.2.weight" and "NaN or infinite" in error["message"]
    assert fine["model"] == good and 0.0 <= fine["accuracy"] <= 1.0 and fine["loss"] > 0

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


# -- F4: the data's errors once, a model's errors in its row -----------------------------
def test_data_without_labels_is_one_error_for_the_command(tmp_path, capsys):
    a = write_model(tmp_path / "a.safetensors")
    b = write_model(tmp_path / "b.safetensors", seed=1)
    data = digits_like(tmp_path / "noy.npz", labels=False)
    assert main(["eval", a, b, "--data", data, "--json"]) == 1
    captured = capsys.readouterr()
    document = strict_json(captured.out)
    assert set(document) == {"error"}  # the documented shape, as every command writes it
    error = document["error"]
    assert error["kind"] == "error" and error["file"] == data
    assert "no labels" in error["message"] and "numpy.savez" in error["hint"]
    assert captured.err.count("no labels") == 1
    assert main(["eval", a, b, "--data", data]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("no labels") == 1 and captured.out == ""


def test_data_that_fits_no_model_is_said_once(tmp_path, capsys):
    a = write_model(tmp_path / "a.safetensors")
    b = write_model(tmp_path / "b.safetensors", seed=1)
    data = digits_like(tmp_path / "wide.npz", features=60)
    assert main(["eval", a, b, "--data", data]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"merger: error: {data}: the data's examples are shaped [60]")
    assert main(["eval", a, b, "--data", data, "--json"]) == 1
    error = strict_json(capsys.readouterr().out)["error"]
    assert error["file"] == data and "64 features" in error["message"]


def test_one_model_the_data_does_not_fit_fails_its_own_row(tmp_path, capsys):
    a = write_model(tmp_path / "a.safetensors")
    narrow = write_model(tmp_path / "narrow.safetensors", widths=(32, 16, 10))
    b = write_model(tmp_path / "b.safetensors", seed=1)
    data = digits_like(tmp_path / "d.npz")
    assert main(["eval", a, narrow, b, "--data", data, "--json"]) == 1
    rows = strict_json(capsys.readouterr().out)
    assert [r["model"] for r in rows] == [a, narrow, b]
    assert "error" not in rows[0] and "error" not in rows[2]
    error = rows[1]["error"]
    assert set(error) <= {"kind", "message", "file", "tensor", "hint"}
    assert error["kind"] == "error" and error["file"] == data and "32 features" in error["message"]
    assert main(["eval", a, narrow, b, "--data", data]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"merger: error: {narrow}: {data}: the data's examples")


def test_a_nan_weight_in_a_buffer_is_caught_too(tmp_path, capsys):
    """Every floating tensor counts, parameters or not (a BatchNorm's running_var)."""
    state = mlp_state([64, 16, 10])
    state["layers.0.bias"] = torch.full((16,), float("inf"))
    path = tmp_path / "inf.safetensors"
    save_file(state, str(path))
    assert main(["eval", str(path), "--data", digits_like(tmp_path / "d.npz"), "--json"]) == 1
    (row,) = strict_json(capsys.readouterr().out)
    assert row["error"]["tensor"] == "layers.0.bias" and "16 of 16" in row["error"]["message"]
