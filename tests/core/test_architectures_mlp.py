"""The MLP family: any naming, order by shape chain, spec invariance, builder fidelity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.architectures import detect_family, resolve_architecture
from core.architectures.base import shapes_of
from core.errors import MergerError


def _sequential_state(prefix: str, widths=(64, 32, 32, 10)) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    mods: list[nn.Module] = []
    for a, b in zip(widths, widths[1:], strict=False):
        mods += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*mods[:-1])
    return {prefix + k: v for k, v in net.state_dict().items()}


@pytest.mark.parametrize("prefix", ["layers.", "net.", ""])
def test_sequential_naming_is_detected_and_invariant(prefix):
    state = _sequential_state(prefix)
    arch = resolve_architecture(None, state)
    assert arch.name == "mlp" and arch.input_shape == (64,)
    assert list(arch.spec.groups) == [f"P_{prefix}0", f"P_{prefix}2"]
    assert arch.spec.sizes == {f"P_{prefix}0": 32, f"P_{prefix}2": 32}
    net = arch.build(state)
    assert list(net.state_dict()) == list(state)
    assert arch.spec.self_test(arch.build, state, torch.randn(8, 64)) < 1e-10


def test_builder_computes_what_the_original_sequential_computes():
    torch.manual_seed(2)
    original = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    state = {"layers." + k: v for k, v in original.state_dict().items()}
    x = torch.randn(4, 5)
    assert torch.allclose(resolve_architecture("mlp", state).build(state)(x), original(x))


def test_named_layers_in_text_sorted_order_follow_the_shape_chain():
    torch.manual_seed(3)
    # 12 layers: as text, "fc10" sorts before "fc2"; natural order fixes it
    widths = [9, 8, 7, 6, 5, 4, 3, 4, 5, 6, 7, 8, 2]
    state = {}
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False), start=1):
        state[f"fc{i}.weight"] = torch.randn(b, a)
        state[f"fc{i}.bias"] = torch.randn(b)
    state = dict(sorted(state.items()))  # what a safetensors file gives back
    arch = resolve_architecture(None, state)
    assert arch.input_shape == (9,)
    assert arch.spec.self_test(arch.build, state, torch.randn(3, 9)) < 1e-10


def test_shape_chain_orders_layers_whose_names_say_nothing():
    state = {
        "out.weight": torch.randn(3, 5),
        "hidden.weight": torch.randn(5, 4),
        "first.weight": torch.randn(4, 6),
    }
    arch = resolve_architecture("mlp", state)
    assert arch.input_shape == (6,)
    assert list(arch.spec.groups) == ["P_first", "P_hidden"]  # no biases: weights only
    assert arch.spec.self_test(arch.build, state, torch.randn(3, 6)) < 1e-10


@pytest.mark.parametrize("option", ["gelu", "tanh"])
def test_activation_option(option):
    state = _sequential_state("layers.", (6, 5, 4))
    arch = resolve_architecture(f"mlp:{option}", state)
    net = arch.build(state)
    x = torch.randn(2, 6)
    act = {"gelu": nn.functional.gelu, "tanh": torch.tanh}[option]
    expected = act(x @ state["layers.0.weight"].T + state["layers.0.bias"])
    expected = expected @ state["layers.2.weight"].T + state["layers.2.bias"]
    assert torch.allclose(net(x), expected, atol=1e-6)
    assert arch.spec.self_test(arch.build, state, x) < 1e-10


def test_images_are_flattened():
    state = _sequential_state("layers.", (12, 5, 3))
    net = resolve_architecture(None, state).build(state)
    assert net(torch.randn(2, 3, 2, 2)).shape == (2, 3)


def test_unknown_option_and_family_are_refused():
    state = _sequential_state("layers.")
    with pytest.raises(MergerError, match="no option 'swish'"):
        resolve_architecture("mlp:swish", state)
    with pytest.raises(MergerError, match="unknown architecture 'lenet'"):
        resolve_architecture("lenet", state)


def test_broken_chain_is_not_an_mlp():
    shapes = {"a.weight": (5, 4), "b.weight": (3, 6)}
    with pytest.raises(MergerError, match="no built-in architecture fits"):
        detect_family(shapes)
    with pytest.raises(MergerError, match="not a 'mlp' model"):
        resolve_architecture("mlp", {k: torch.zeros(s) for k, s in shapes.items()})


def test_conv_weights_are_not_an_mlp():
    shapes = shapes_of({"c.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(2, 4)})
    from core.architectures import mlp

    assert "c.weight" in mlp.fits(shapes)
