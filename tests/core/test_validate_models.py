"""check_models: which model gets the blame when models do not fit together."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import save_file

from core.validate import check_models


def write(path, rows: int):
    save_file({"w": np.zeros((rows, 4), np.float32), "b": np.zeros(rows, np.float32)}, str(path))
    return str(path)


def test_the_odd_reference_is_blamed_not_the_models_that_agree(tmp_path):
    odd = write(tmp_path / "odd.safetensors", 3)
    good = [write(tmp_path / f"good{i}.safetensors", 5) for i in range(3)]
    report = check_models([odd, *good])
    assert not report.ok
    assert report.problems[odd] and "differs from the other 3 models" in report.problems[odd][0]
    assert "good0.safetensors" in report.problems[odd][0]
    assert all(report.problems[p] == [] for p in good)
    # Named as base, the odd model is still the one flagged.
    assert check_models(good, base=odd).problems[odd]


def test_an_odd_model_among_others_is_blamed_itself(tmp_path):
    good = [write(tmp_path / f"good{i}.safetensors", 5) for i in range(2)]
    odd = write(tmp_path / "odd.safetensors", 3)
    report = check_models([*good, odd])
    assert report.problems[odd] and not report.problems[good[0]] and not report.problems[good[1]]


def test_with_two_models_or_no_agreement_the_reference_is_kept(tmp_path):
    a, b = write(tmp_path / "a.safetensors", 3), write(tmp_path / "b.safetensors", 5)
    report = check_models([a, b])
    assert report.problems[b] and not report.problems[a]  # nothing to tell who is odd
    c = write(tmp_path / "c.safetensors", 7)
    report = check_models([a, b, c])  # the others disagree too: no one to side with
    assert report.problems[b] and report.problems[c] and not report.problems[a]


def test_names_that_differ_by_a_prefix_are_explained(tmp_path):
    """A Lightning-style `model.` prefix on one model's names: it lacks every tensor, but
    the reason says the weights are there under another name."""
    plain = write(tmp_path / "plain.safetensors", 5)
    prefixed = str(tmp_path / "lightning.safetensors")
    save_file(
        {"model.w": np.zeros((5, 4), np.float32), "model.b": np.zeros(5, np.float32)}, prefixed
    )
    reason = check_models([plain, prefixed], extra_keys="error").problems[prefixed][0]
    assert "lacks 2 tensor(s)" in reason and "prefix 'model.' here" in reason
    reason = check_models([prefixed, plain], extra_keys="error").problems[plain][0]
    assert "prefix 'model.' in lightning.safetensors" in reason
    other = str(tmp_path / "other.safetensors")
    save_file({"w2": np.zeros((5, 4), np.float32), "b": np.zeros(5, np.float32)}, other)
    assert "prefix" not in check_models([plain, other]).problems[other][0]
