"""Evaluation: cross-entropy and accuracy against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.data import Dataset
from core.errors import MergerError
from core.evaluate import evaluate


class _Fixed(nn.Module):
    """Returns the input itself as logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_loss_and_accuracy_by_hand():
    # two classes; logits (0, 0) -> loss log 2; (log 3, 0) -> p = 3/4 on class 0
    x = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    y = torch.tensor([0, 0, 1])
    result = evaluate(_Fixed(), Dataset(x, y, "t"), batch_size=2)
    expected = (math.log(2) + math.log(4 / 3) + math.log(4)) / 3
    assert result["loss"] == pytest.approx(expected, rel=1e-6)
    # argmax of (0, 0) is class 0 -> correct; rows 2, 3 predict 0 -> one correct
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["n"] == 3


def test_mode_is_restored():
    net = nn.Sequential(nn.Linear(2, 2))
    net.train()
    evaluate(net, Dataset(torch.zeros(2, 2), torch.tensor([0, 1]), "t"))
    assert net.training


def test_bad_labels_and_outputs_are_explained():
    with pytest.raises(MergerError, match="label 5 but the model has only 2") as info:
        evaluate(_Fixed(), Dataset(torch.zeros(2, 2), torch.tensor([0, 5]), "t", "/d/t.npz"))
    assert str(info.value).startswith("/d/t.npz: the data has label 5")
    with pytest.raises(MergerError, match="class scores"):
        evaluate(_Fixed(), Dataset(torch.zeros(2, 2, 2), torch.tensor([0, 1]), "t"))


@pytest.mark.slow
def test_trained_digits_mlp_scores_well_and_permuting_it_changes_nothing():
    from core.architectures import resolve_architecture
    from core.architectures.factories import mlp_state
    from core.data import split_digits

    train, test = split_digits(seed=0)
    state = mlp_state([64, 32, 10], seed=0)
    arch = resolve_architecture(None, state)
    net = arch.build(state).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(15):
        for x, y in train.batches(128):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    trained = {k: v.detach().clone() for k, v in net.state_dict().items()}
    before = evaluate(arch.build(trained), test)
    assert before["accuracy"] > 0.9 and before["n"] == len(test)
    after = evaluate(arch.build(arch.spec.apply(trained, arch.spec.random(7))), test)
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-5)
    assert after["accuracy"] == before["accuracy"]
    untrained = evaluate(arch.build(state), test)
    assert untrained["loss"] > 2 * before["loss"]


class _TwoHeads(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)
        self.as_dict = as_dict

    def forward(self, x):
        out = self.fc(x)
        return {"logits": out, "aux": out} if self.as_dict else (out, out)


@pytest.mark.parametrize(
    ("as_dict", "said"), [(False, "a tuple of 2"), (True, "a dict with keys logits, aux")]
)
def test_a_model_with_several_outputs_is_refused_with_what_it_returns(as_dict, said):
    """It crashed with "'tuple' object has no attribute 'dim'" (an internal error)."""
    data = Dataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), "d")
    with pytest.raises(MergerError, match=f"forward returns {said}.*logits alone"):
        evaluate(_TwoHeads(as_dict), data)


def test_scores_that_are_not_finite_are_counted_and_nan_predicts_nothing():
    # row 1: +inf on class 0 (an overflow), a prediction all the same; row 2: NaN, none;
    # row 3: finite and right. Only rows 1 and 3 can be correct.
    x = torch.tensor([[math.inf, 0.0], [math.nan, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    result = evaluate(_Fixed(), Dataset(x, y, "t"))
    assert result["nonfinite"] == 2
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert not math.isfinite(result["loss"])
    finite = evaluate(_Fixed(), Dataset(x[2:], y[2:], "t"))
    assert finite["nonfinite"] == 0 and math.isfinite(finite["loss"])


def test_weights_holding_nan_are_named_by_tensor():
    from core.validate import check_state_finite

    state = {"a.weight": torch.ones(3), "b.weight": torch.tensor([1.0, math.nan, math.inf])}
    with pytest.raises(MergerError, match=r"NaN or infinite values \(2 of 3\)") as info:
        check_state_finite(state, "m.safetensors")
    assert info.value.tensor == "b.weight" and info.value.file == "m.safetensors"
    # integer tensors cannot hold NaN; a finite model passes
    check_state_finite({"n": torch.tensor(3), "w": torch.zeros(2)}, "m.safetensors")
