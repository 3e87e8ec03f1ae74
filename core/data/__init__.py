"""Evaluation data: the built-in digits set and user tensors in `.npz` files.

Alignment by activations, BatchNorm re-estimation and the loss-landscape views all need
a few batches of inputs (and labels, for the loss). They take a `Dataset` from
`load_dataset(spec)`, where `spec` is the same string the CLI's `--data` and the GUI's
data picker accept: `digits` or a path to an `.npz` file with arrays `x` and `y`.
"""

from __future__ import annotations

from pathlib import Path

from core.data.dataset import Dataset
from core.data.digits import load_digits, split_digits
from core.data.npz import load_npz

BUILTIN = ("digits",)

__all__ = ["BUILTIN", "Dataset", "load_dataset", "load_digits", "load_npz", "split_digits"]


def load_dataset(spec: str | Path, *, labels: bool = True) -> Dataset:
    """The data set named by `spec`: `digits` (built in) or a path to an `.npz` file.

    `labels=False` is for jobs that only run the models (alignment, BatchNorm statistics):
    a file's labels are then neither read nor checked."""
    if isinstance(spec, str) and spec.strip().lower() == "digits":
        return load_digits()
    return load_npz(spec, labels=labels)
