"""User data as an `.npz` file holding arrays `x` (inputs) and `y` (integer labels).

`y` may be left out where only inputs are needed (activation matching, BatchNorm
statistics); evaluation asks for it.

`.npz` is what numpy writes with `np.savez`; it needs no pickle to read, so a data file
cannot run code. Everything is validated here so that a bad file gives one clear
message naming the file instead of a shape error deep in a forward pass.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from core.data.dataset import Dataset
from core.errors import MergerError

_HINT = "save it with numpy.savez(path, x=inputs, y=labels)"


def load_npz(path: str | Path, *, labels: bool = True) -> Dataset:
    """Read `x` as float32 and `y` as int64 from an `.npz` file, validating both.

    With `labels=False` (alignment, BatchNorm statistics: inputs only) `y` is not read,
    so labels the job never uses cannot refuse the file."""
    path = Path(path)
    if path.is_dir():
        raise MergerError(
            "is a folder, not a data file",
            file=path,
            hint="use 'digits' for the built-in data set or a path to an .npz file",
        )
    if not path.is_file():
        raise MergerError(
            "no such data file",
            file=path,
            hint="use 'digits' for the built-in data set or a path to an .npz file",
        )
    problem = _not_npz(path)
    if problem:
        raise MergerError(problem, file=path, hint=_HINT)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise MergerError(
            f"cannot read it as an .npz archive with arrays x and y ({exc})",
            file=path,
            hint=_HINT,
        ) from exc
    if "x" not in arrays:
        found = ", ".join(sorted(arrays)) or "none"
        raise MergerError(
            f"the archive lacks array x, the inputs (found: {found})", file=path, hint=_HINT
        )
    x = arrays["x"]
    _check_numeric(path, "x", x)
    if x.ndim < 2:
        raise MergerError(
            f"'x' must hold one example per row, but it has shape {list(x.shape)}: "
            + (
                f"a 1-D x reads as {len(x)} examples that are bare numbers, which no layer takes"
                if x.ndim == 1
                else "a single number is no data set"
            ),
            file=path,
            hint="save x.reshape(-1, 1) for examples of one number each, or x.reshape(1, -1) "
            "for one example of these features",
        )
    if x.shape[0] == 0:
        raise MergerError("the data set is empty", file=path, hint=_HINT)
    if not np.all(np.isfinite(x)):
        raise MergerError("x holds NaN or infinite values", file=path)
    if "y" not in arrays or not labels:  # inputs only: enough to run the models
        return Dataset(_as_inputs(x), None, path.stem, str(path))
    y = arrays["y"]
    _check_numeric(path, "y", y)
    if y.ndim != 1:
        raise MergerError(
            f"'y' must be one label per example (1-D), but x has shape {x.shape} "
            f"and y has shape {y.shape}",
            file=path,
            hint=_HINT,
        )
    if x.shape[0] != y.shape[0]:
        raise MergerError(
            f"x has {x.shape[0]} examples but y has {y.shape[0]} labels",
            file=path,
            hint="both arrays need the same length along their first axis",
        )
    return Dataset(_as_inputs(x), _as_labels(path, y), path.stem, str(path))


def _not_npz(path: Path) -> str | None:
    """Why the file is not an .npz archive (a zip, as numpy.savez writes), or None."""
    try:
        with path.open("rb") as f:
            head = f.read(6)
    except OSError as exc:
        return f"cannot read the data file: {exc.strerror or exc}"
    if head.startswith(b"PK"):
        return None
    if head.startswith(b"\x93NUMPY"):
        return (
            "this is a single numpy array (.npy, as numpy.save writes), "
            "not an .npz archive with arrays x and y"
        )
    if not head:
        return "cannot read it as an .npz archive: the file is empty"
    return (
        "cannot read it as an .npz archive: it is not a zip of numpy arrays (as numpy.savez writes)"
    )


def _check_numeric(path: Path, name: str, array: np.ndarray) -> None:
    if array.dtype.kind not in "biuf":
        raise MergerError(
            f"array '{name}' has non-numeric dtype {array.dtype}",
            file=path,
            hint=f"store '{name}' as numbers (float inputs, integer labels)",
        )


def _as_inputs(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _as_labels(path: Path, y: np.ndarray) -> torch.Tensor:
    """Labels as int64; float labels are accepted only when they are whole numbers ≥ 0."""
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise MergerError(
            "labels in 'y' must be whole numbers (class indices)", file=path, hint=_HINT
        )
    if np.any(y < 0):
        raise MergerError("labels in 'y' must not be negative", file=path, hint=_HINT)
    return torch.from_numpy(y.astype(np.int64))
