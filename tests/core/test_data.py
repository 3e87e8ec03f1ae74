"""The digits loader and `.npz` validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data import Dataset, load_dataset, split_digits
from core.errors import MergerError


def test_digits_shapes_ranges_and_labels():
    data = load_dataset("digits")
    assert data.x.shape == (1797, 64) and data.x.dtype == torch.float32
    assert data.y.shape == (1797,) and data.y.dtype == torch.int64
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert sorted(data.y.unique().tolist()) == list(range(10))
    assert data.input_shape == (64,) and data.num_classes == 10


def test_split_digits_is_a_seeded_partition():
    train, test = split_digits(seed=3)
    again, _ = split_digits(seed=3)
    other, _ = split_digits(seed=4)
    assert len(train) + len(test) == 1797
    assert torch.equal(train.x, again.x)
    assert not torch.equal(train.x, other.x)
    # a partition: the two halves together hold each example once (same sums and label counts)
    full = load_dataset("digits")
    rows = torch.cat([train.x, test.x])
    assert torch.allclose(rows.sum(0), full.x.sum(0))
    assert torch.equal(torch.cat([train.y, test.y]).bincount(), full.y.bincount())


def test_batches_cover_the_data_in_order():
    data = Dataset(torch.arange(10.0).reshape(10, 1), torch.arange(10), "t")
    sizes = [len(x) for x, _ in data.batches(4)]
    assert sizes == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in data.batches(4)]), torch.arange(10))
    assert len(list(data.batches(4, limit=2))) == 2


def test_npz_round_trip(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((5, 3, 2, 2), dtype=np.float64), y=np.array([0, 1, 2, 1, 0]))
    data = load_dataset(path)
    assert data.x.shape == (5, 3, 2, 2) and data.x.dtype == torch.float32
    assert data.y.tolist() == [0, 1, 2, 1, 0] and data.y.dtype == torch.int64
    assert data.name == "d"


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"inputs": np.ones((3, 2)), "labels": np.zeros(3)}, "lacks array x, the inputs"),
        ({"x": np.ones((3, 2)), "y": np.zeros(4, dtype=int)}, "3 examples but y has 4"),
        ({"x": np.array([["a", "b"]] * 3), "y": np.zeros(3, dtype=int)}, "non-numeric"),
        ({"x": np.ones((3, 2)), "y": np.array([0.5, 1, 2])}, "whole numbers"),
        ({"x": np.ones((3, 2)), "y": np.zeros((3, 2), dtype=int)}, "1-D"),
        ({"x": np.full((3, 2), np.nan), "y": np.zeros(3, dtype=int)}, "NaN"),
        ({"x": np.ones(64), "y": np.zeros(1, dtype=int)}, "a 1-D x reads as 64 examples"),
        ({"x": np.ones(64)}, "x.reshape(1, -1)"),
        ({"x": np.float32(3.0)}, "a single number is no data set"),
    ],
)
def test_npz_validation_names_the_file(tmp_path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(MergerError) as info:
        load_dataset(str(path))
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "y", [np.array([0.5, 1, 2]), np.zeros(4, dtype=int), np.zeros((3, 2), dtype=int)]
)
def test_jobs_that_only_run_the_models_do_not_read_labels(tmp_path, y):
    """Alignment and BatchNorm statistics use x alone: labels they never read cannot
    refuse the file (evaluation still checks them)."""
    path = tmp_path / "inputs.npz"
    np.savez(path, x=np.ones((3, 2)), y=y)
    data = load_dataset(str(path), labels=False)
    assert data.y is None and data.x.shape == (3, 2)
    with pytest.raises(MergerError):
        load_dataset(str(path))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(MergerError, match="no such data file"):
        load_dataset(str(tmp_path / "nope.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(MergerError, match="cannot read it as an .npz"):
        load_dataset(str(junk))


def test_inputs_without_labels_serve_activations_but_not_evaluation(tmp_path):
    """Activation matching and BatchNorm statistics need only x; loss and accuracy need y,
    and evaluation says so, naming the file."""
    from torch import nn

    from core.evaluate import evaluate

    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=np.arange(10, dtype=np.float32).reshape(5, 2))
    data = load_dataset(path)
    assert data.y is None and data.where == str(path)
    assert [tuple(x.shape) for x, _ in data.batches(2)] == [(2, 2), (2, 2), (1, 2)]
    assert all(y is None for _, y in data.batches(2))
    assert data.subset(torch.tensor([0, 4])).y is None
    with pytest.raises(MergerError, match="no labels") as info:
        evaluate(nn.Linear(2, 3), data)
    assert str(path) in str(info.value)
