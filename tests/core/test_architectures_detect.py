"""Family detection: the one fitting family is picked; none or several are refused clearly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core.architectures import FAMILIES, detect_family, resolve_architecture
from core.errors import MergerError


def test_mlp_shapes_detect_as_mlp_only():
    shapes = {"layers.0.weight": (8, 4), "layers.0.bias": (8,), "layers.2.weight": (3, 8)}
    assert detect_family(shapes) == "mlp"
    assert [n for n, f in FAMILIES.items() if f.fits(shapes) is None] == ["mlp"]


def test_several_fitting_families_are_refused_with_candidates(monkeypatch):
    twin = dataclasses.replace(FAMILIES["mlp"], name="mlp_twin")
    monkeypatch.setitem(FAMILIES, "mlp_twin", twin)
    with pytest.raises(MergerError) as info:
        detect_family({"a.weight": (3, 4)})
    text = str(info.value)
    assert "several architectures: mlp, mlp_twin" in text and "(Architecture in the window" in text


def test_nothing_fitting_lists_each_familys_reason():
    with pytest.raises(MergerError) as info:
        detect_family({"embed.weight": (100, 8, 3)})
    text = str(info.value)
    for name in FAMILIES:
        assert f"{name}:" in text
    assert "model.py:factory" in text


def test_explicit_name_is_case_insensitive_and_spec_sizes_are_filled():
    state = {"fc1.weight": torch.randn(5, 4), "fc2.weight": torch.randn(2, 5)}
    arch = resolve_architecture("MLP", state)
    assert arch.spec.sizes == {"P_fc1": 5}


def test_architecture_self_test_uses_its_input_shape():
    from core.architectures.factories import resnet20_state, vgg_state

    state = vgg_state([4, "M", 6, "M"], batchnorm=True, hidden=(5,), seed=2)
    arch = resolve_architecture(None, state)
    assert arch.example_input(batch=3).shape == (3, 3, 4, 4)
    assert arch.self_test(state) < 1e-10
    assert resolve_architecture(None, resnet20_state(1)).self_test(resnet20_state(1)) < 1e-10


def test_unsupported_variant_gets_a_merger_error_not_a_torch_error():
    from core.architectures.factories import vgg_state

    state = vgg_state([4, "M"], batchnorm=True, hidden=(5,))
    state = {k: v for k, v in state.items() if "running" not in k}
    missing = r"2 tensor\(s\) the model has are missing \(features.1.running_mean, features.1.running_var\)"
    with pytest.raises(MergerError, match=missing):
        resolve_architecture(None, state).build(state)


def test_auto_and_empty_mean_detect():
    state = {"fc1.weight": torch.randn(5, 4), "fc2.weight": torch.randn(2, 5)}
    assert resolve_architecture("auto", state).name == resolve_architecture("", state).name == "mlp"


def _lightning_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LightningModule's state: its network under `model.`, a weighted loss beside it."""
    out = {f"model.{name}": value for name, value in state.items()}
    out["criterion.weight"] = torch.ones(10)
    return out


@pytest.mark.parametrize("arch", [None, "resnet20"])
def test_tensors_beside_the_network_are_named_not_every_familys_reason(arch):
    from core.architectures.factories import resnet20_state

    with pytest.raises(MergerError) as info:
        resolve_architecture(arch, _lightning_names(resnet20_state()))
    err = info.value
    assert err.message.startswith("holds 'criterion.weight' beside a network that fits 'resnet20'")
    assert "model.state_dict()" in err.hint
    assert "vgg:" not in str(err)  # not the list of every family's reason


def test_two_stray_modules_are_both_named():
    from core.architectures.factories import mlp_state

    state = {**mlp_state([64, 32, 10]), "loss.pos_weight": torch.ones(10)}
    state["metric.total"] = torch.zeros(())
    with pytest.raises(
        MergerError,
        match="holds 'loss.pos_weight' and 'metric.total' beside a network that fits 'mlp'",
    ):
        detect_family({k: tuple(v.shape) for k, v in state.items()})


def test_a_large_part_that_does_not_fit_is_not_called_a_stray():
    """Leaving out a layer whose shape breaks the chain would make a shorter MLP fit: that
    is a reason of the network's own, so every family's reason is listed instead."""
    shapes = {"fc1.weight": (32, 64), "fc2.weight": (16, 32), "fc3.weight": (10, 99)}
    with pytest.raises(MergerError) as info:
        detect_family(shapes)
    assert "holds" not in info.value.message and "vgg:" in info.value.message


def test_a_checkpoints_fit_is_read_from_its_headers(tmp_path):
    from safetensors.torch import save_file

    from core.architectures import checkpoint_architecture_problem
    from core.architectures.factories import mlp_state

    good, odd = tmp_path / "mlp.safetensors", tmp_path / "odd.safetensors"
    save_file(mlp_state([8, 6, 3]), str(good))
    save_file({"a.weight": torch.zeros(4, 2, 3, 3, 3)}, str(odd))
    assert checkpoint_architecture_problem(None, good) is None
    assert checkpoint_architecture_problem("mlp", good) is None
    assert "not a 'vgg' model" in checkpoint_architecture_problem("vgg", good)
    assert "no built-in architecture fits" in checkpoint_architecture_problem("auto", odd)
    # a user's model is traced when run, and an unreadable file has its own error
    assert checkpoint_architecture_problem("net.py:make", odd) is None
    assert checkpoint_architecture_problem(None, tmp_path / "missing.safetensors") is None


# -- a prefix on every name (a wrapper's attribute) that the readers do not know ---------
def _under(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{name}": value for name, value in state.items()}


@pytest.mark.parametrize("prefix", ["model.", "net.", "model.module."])
@pytest.mark.parametrize("arch", [None, "vgg"])
def test_names_under_a_shared_prefix_are_read_without_it(prefix, arch):
    """`{"state_dict": {"model.features.0.weight": ...}}` saved without Lightning's marker:
    the family is found on the names without the prefix, and the architecture works on
    the checkpoint's own names (spec, built model, self-test)."""
    from core.architectures.factories import vgg_state

    plain = vgg_state([4, "M", 6, "M"], batchnorm=True, hidden=(5,), seed=3)
    state = _under(prefix, plain)
    arch_plain = resolve_architecture(arch, plain)
    wrapped = resolve_architecture(arch, state)
    assert wrapped.name == arch_plain.name == "vgg"
    assert set(wrapped.spec.tensors) == {prefix + name for name in arch_plain.spec.tensors}
    assert wrapped.spec.sizes == arch_plain.spec.sizes
    net = wrapped.build(state)
    assert set(net.state_dict()) == set(state)
    x = torch.randn(3, 3, 4, 4)
    assert torch.allclose(net(x), arch_plain.build(plain)(x))
    assert wrapped.self_test(state) < 1e-10  # random permutations keep the function
    assert any(f"prefix '{prefix}'" in note for note in wrapped.notes)
    assert not any("prefix" in note for note in arch_plain.notes)


def test_a_shared_prefix_is_named_when_the_names_fit_without_it_neither():
    shapes = {"model.embed.weight": (100, 8, 3), "model.head.weight": (4, 8)}
    state = {name: torch.zeros(shape) for name, shape in shapes.items()}
    with pytest.raises(MergerError) as info:
        resolve_architecture(None, state, source="m.ckpt")
    err = info.value
    assert err.file == "m.ckpt"
    assert "with or without the prefix 'model.' that every name carries" in err.message
    assert "embed.weight" in err.message
    assert "'model.embed.weight'" not in err.message  # the reasons are for the names without it
    with pytest.raises(
        MergerError, match=r"not a 'mlp' model, with or without the prefix 'model\.'"
    ):
        resolve_architecture("mlp", state)


def test_names_that_fit_as_they_are_keep_them():
    """`layers.0.weight` ... all share `layers.`, and already fit: nothing is dropped."""
    from core.architectures.factories import mlp_state

    state = mlp_state([8, 6, 3])
    arch = resolve_architecture(None, state)
    assert set(arch.spec.tensors) <= set(state) and not any("prefix" in n for n in arch.notes)
