"""Does this data fit this model? Checked before any forward pass, explained for people.

Only what is certain is compared: the number of dimensions of one example and its first
dimension (features of an MLP, channels of a CNN). Spatial sizes are left alone, since
pooling makes many image sizes valid. `forward_errors` turns what slips through (a shape
error inside the model) into the same kind of message instead of a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from core.data.dataset import Dataset
from core.errors import MergerError


def check_fits(dataset: Dataset, input_shape: tuple[int, ...] | None) -> None:
    """Raise MergerError when `dataset`'s examples cannot be the model's inputs."""
    if input_shape is None:
        return
    got = tuple(dataset.input_shape)
    want = tuple(input_shape)
    if len(got) != len(want) or (got and got[0] != want[0]):
        raise MergerError(
            f"the data's examples are shaped {list(got)}, but the model takes {_inputs(want)}",
            file=dataset.where,
            hint="give data made for this model (x shaped N×C×H×W for images, N×features "
            "otherwise)",
        )


def _inputs(shape: tuple[int, ...]) -> str:
    """What is certain about a model's inputs: their dimensions and the first of them
    (image sizes are only an example: pooling lets many fit)."""
    if len(shape) == 1:
        return f"{shape[0]} features per example"
    if len(shape) == 3:
        return f"images with {shape[0]} channel(s), C×H×W (e.g. {list(shape)})"
    return f"examples of {len(shape)} dimensions, the first {shape[0]} (e.g. {list(shape)})"


@contextlib.contextmanager
def forward_errors(dataset: Dataset) -> Iterator[None]:
    """Report a shape or dtype error inside the model's forward pass as a MergerError."""
    try:
        yield
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise MergerError(
            f"the model cannot run on this data ({first})",
            file=dataset.where,
            hint=f"its examples are shaped {list(dataset.input_shape)}; give data made for it",
        ) from None
