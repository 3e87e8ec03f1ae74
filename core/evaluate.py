"""Loss and accuracy of a classifier on a data set.

The landscape views evaluate many interpolated models, and the tests use it to check
that alignment lowers the loss barrier, so it is kept minimal: eval mode, no grad, mean
cross-entropy over all examples (summed per batch, divided once, so the last short
batch weighs what it should).

A model can score NaN or inf for two reasons that need different words: its weights
hold NaN or inf (a broken checkpoint: `validate.check_state_finite` names the tensor), or its
weights are finite but its class scores overflow float32 on the data. `evaluate`
counts the examples of the second kind (`nonfinite`) so that a front can say why a loss
is missing instead of printing `nan`.
"""

from __future__ import annotations

import torch
from torch import nn

from core.data import Dataset
from core.data.fit import forward_errors
from core.errors import MergerError


def check_labelled(dataset: Dataset) -> None:
    """Refuse data that cannot give a loss or an accuracy whatever the model: no examples,
    or no labels. A property of the data alone, so a front checks it once, not per model."""
    if len(dataset) == 0:
        raise MergerError(f"data set '{dataset.name}' is empty", hint="give data with examples")
    if dataset.y is None:
        raise MergerError(
            "the data has no labels (array y), which loss and accuracy need",
            file=dataset.where,
            hint="save it with numpy.savez(path, x=inputs, y=labels)",
        )


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str = "cpu"
) -> dict[str, float]:
    """Mean cross-entropy `loss`, `accuracy` in [0, 1], example count `n`, and
    `nonfinite`, how many examples got class scores that are not all finite.

    With `nonfinite` > 0 the loss is inf or NaN; an example whose scores hold NaN has no
    prediction and counts as wrong (argmax would pick the NaN). The model's train/eval
    mode is restored afterwards; it is left on `device`, so that evaluating many points
    of a landscape does not copy it back and forth.
    """
    check_labelled(dataset)
    was_training = model.training
    model.eval()
    model.to(device)
    total_loss, correct, nonfinite = 0.0, 0, 0
    try:
        for x, y in dataset.batches(batch_size):
            with forward_errors(dataset):
                logits = model(x.to(device))
            assert y is not None  # checked above
            y = y.to(device)
            _check_logits(logits, y, dataset.where)
            total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            nonfinite += int((~torch.isfinite(logits)).any(dim=1).sum())
            predicted = (logits.argmax(dim=1) == y) & ~logits.isnan().any(dim=1)
            correct += int(predicted.sum())
    finally:
        model.train(was_training)
    n = len(dataset)
    return {"loss": total_loss / n, "accuracy": correct / n, "n": n, "nonfinite": nonfinite}


def _check_logits(logits: object, y: torch.Tensor, name: str) -> None:
    if not isinstance(logits, torch.Tensor):  # several heads, a dict of outputs...
        what = (
            f"a dict with keys {', '.join(map(str, logits))}"
            if isinstance(logits, dict)
            else f"a {type(logits).__name__}"
            + (f" of {len(logits)} outputs" if isinstance(logits, tuple | list) else "")
        )
        raise MergerError(
            f"the model's forward returns {what}; evaluation needs one tensor of class "
            "scores (batch, classes)",
            hint="give a factory whose model returns the logits alone",
        )
    if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise MergerError(
            f"the model gives outputs of shape {tuple(logits.shape)} for a batch of "
            f"{y.shape[0]}; evaluation needs class scores (batch, classes)",
            hint="evaluate classifiers only",
        )
    if int(y.max()) >= logits.shape[1]:
        raise MergerError(
            f"the data has label {int(y.max())} but the model has only {logits.shape[1]} outputs",
            file=name,
            hint="use data whose labels match the model's classes",
        )
