"""scikit-learn's built-in handwritten digits (1797 8×8 images, 10 classes).

It ships inside scikit-learn, so the demo and the tests have real data with no
download. Pixels (0..16) are scaled to [0, 1] and flattened to 64 features.
"""

from __future__ import annotations

import torch

from core.data.dataset import Dataset


def load_digits() -> Dataset:
    """All 1797 digits: x float32 (1797, 64) in [0, 1], y int64 (1797,)."""
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return Dataset(x, y, "digits")


def split_digits(seed: int = 0, test_fraction: float = 0.25) -> tuple[Dataset, Dataset]:
    """A seeded shuffle of the digits into (train, test); the same seed gives the same split."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, not {test_fraction}")
    data = load_digits()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(data) * test_fraction)
    return (
        data.subset(order[n_test:], "digits-train"),
        data.subset(order[:n_test], "digits-test"),
    )
