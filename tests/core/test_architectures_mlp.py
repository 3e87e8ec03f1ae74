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


def _linear_state(layers: list[tuple[str, int, int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """(name, in, out) per layer, stored name-sorted as a safetensors file returns them."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, fan_in, fan_out in layers:
        state[f"{name}.weight"] = torch.randn(fan_out, fan_in, generator=gen)
        state[f"{name}.bias"] = torch.randn(fan_out, generator=gen)
    return dict(sorted(state.items()))


def _forward(state, order: list[str], x: torch.Tensor) -> torch.Tensor:
    for i, name in enumerate(order):
        x = x @ state[f"{name}.weight"].T + state[f"{name}.bias"]
        x = torch.relu(x) if i < len(order) - 1 else x
    return x


def test_square_layers_whose_names_do_not_tell_their_order_are_refused():
    """pre/post sort as post, pre: guessing would build a model that computes something
    else, and aligning it would change B's function."""
    state = _linear_state([("encoder", 8, 4), ("layer_pre", 4, 4), ("layer_post", 4, 4)])
    state.update(_linear_state([("logits", 4, 3)]))
    with pytest.raises(MergerError) as info:
        resolve_architecture("mlp", state)
    assert "layer_post [4, 4] and layer_pre [4, 4] cannot be told" in str(info.value)
    assert "path/to/model.py:factory (Architecture in the window, --arch" in info.value.hint
    with pytest.raises(MergerError, match="no built-in architecture fits"):
        resolve_architecture(None, state)


def test_shapes_alone_order_input_hidden_output_around_a_square_layer():
    order = ["input", "hidden", "output"]  # sorts as hidden, input, output
    state = _linear_state([("input", 6, 4), ("hidden", 4, 4), ("output", 4, 3)])
    arch = resolve_architecture(None, state)
    x = torch.randn(5, 6)
    assert torch.allclose(arch.build(state)(x), _forward(state, order, x), atol=1e-6)
    assert list(arch.spec.groups) == ["P_input", "P_hidden"]


@pytest.mark.parametrize("stem", ["fc{}", "net.{}", "blocks.{}.lin", "{}"])
def test_numbers_order_layers_the_shapes_cannot(stem):
    """Five 5x5 layers and a detour 5->7->5: only the numbers (as numbers: 10 after 9) say
    which comes when."""
    widths = [6, 5, 5, 7, 5, 5, 5, 5, 5, 5, 5, 3]
    order = [stem.format(i) for i in range(1, len(widths))]
    state = _linear_state(
        [(n, a, b) for n, a, b in zip(order, widths, widths[1:], strict=False)], seed=4
    )
    arch = resolve_architecture(None, state)
    x = torch.randn(5, 6)
    assert torch.allclose(arch.build(state)(x), _forward(state, order, x), atol=1e-5)


def test_forward_order_agrees_with_every_chain_the_shapes_allow():
    """Against brute force over all orders of small random layer sets named by letters
    (no numbers to decide): one chain is found, several are refused, none is reported."""
    import itertools
    import random

    from core.architectures.mlp import _forward_order

    rng = random.Random(0)
    outcomes = {"one": 0, "several": 0, "none": 0}
    for _ in range(400):
        count = rng.randint(1, 5)
        layers = {
            "abcde"[i]: (rng.choice([2, 3, 4]), rng.choice([2, 3, 4])) for i in range(count)
        }  # name -> (out, in)
        chains = {
            order
            for order in itertools.permutations(layers)
            if all(layers[p][0] == layers[q][1] for p, q in itertools.pairwise(order))
        }
        got = _forward_order(layers)
        if len(chains) == 1:
            outcomes["one"] += 1
            assert got == list(next(iter(chains))), layers
        elif chains:
            outcomes["several"] += 1
            assert isinstance(got, str) and "cannot be told" in got, layers
        else:
            outcomes["none"] += 1
            assert isinstance(got, str) and "do not form one chain" in got, layers
    assert min(outcomes.values()) > 20  # every case was met


def test_a_python_file_without_its_function_gets_told_to_add_it():
    state = _sequential_state("layers.")
    with pytest.raises(MergerError, match="names a Python file but not the function") as info:
        resolve_architecture("models/net.py", state)
    assert info.value.hint == "add the function's name after a colon: models/net.py:make_model"
