"""Multi-layer perceptrons: a chain of Linear layers with one elementwise activation.

The checkpoint does not record the forward order, so it is read from the shapes: each
layer's inputs are the previous layer's outputs, and every layer is used once. Where the
shapes allow more than one order (two 32x32 layers can go either way), names that differ
only in their numbers decide (`layers.2` before `layers.4`, `fc2` before `fc10`), as
nn.Sequential and `fc1`/`fc2` naming make them. Anything else (`layer_pre` and
`layer_post`) is refused: a wrong guess would give a model that computes something else,
and aligning it would change B's function. Such a model is given as `--arch file.py:factory`.

The activation is not in the checkpoint either, so it is an option (`mlp:relu`, the
default, `mlp:gelu`, `mlp:tanh`, ...). Inputs with more than one dimension are flattened,
as for MNIST-style images.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from core.alignment.spec import PermutationSpec
from core.architectures.base import (
    WHERE,
    Family,
    Shapes,
    State,
    attach,
    load_exact,
    natural_key,
)
from core.errors import MergerError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


def layer_chain(shapes: Shapes) -> list[str]:
    """Module names of the Linear layers, input to output; MergerError if not an MLP."""
    reason = _chain_or_reason(shapes)
    if isinstance(reason, str):
        raise MergerError(
            f"not an MLP: {reason}",
            hint=f"give the model's code as path/to/model.py:factory {WHERE}, or pick "
            "another architecture",
        )
    return reason


def fits(shapes: Shapes) -> str | None:
    found = _chain_or_reason(shapes)
    return found if isinstance(found, str) else None


def _chain_or_reason(shapes: Shapes) -> list[str] | str:
    layers: dict[str, tuple[int, int]] = {}
    for name, shape in shapes.items():
        module, _, leaf = name.rpartition(".")
        if leaf == "weight" and len(shape) == 2:
            layers[module] = shape
    if not layers:
        return "no 2-D '*.weight' tensors"
    for name, shape in shapes.items():
        module, _, leaf = name.rpartition(".")
        if module in layers and leaf == "weight":
            continue
        if module in layers and leaf == "bias" and shape == (layers[module][0],):
            continue
        return f"tensor '{name}' {list(shape)} is not a Linear weight or bias"
    return _forward_order(layers)


def _forward_order(layers: dict[str, tuple[int, int]]) -> list[str] | str:
    """The layers in forward order, or why it cannot be told.

    Step by step, the candidates are the unused layers that take the current width and
    leave the rest able to chain on (`_chains_from`). One candidate: taken. Several: the
    numbers of otherwise equal names decide, or the order is ambiguous."""
    order: list[str] = []
    remaining = sorted(layers, key=natural_key)
    width: int | None = None  # outputs of the last layer taken; None before the first
    while remaining:
        shapes = [layers[r] for r in remaining]
        fits = {  # layers of one shape are interchangeable here: test each shape once
            shape: _chains_from(shape[0], _without(shapes, shape))
            for shape in set(shapes)
            if width is None or shape[1] == width
        }
        options = [m for m in remaining if fits.get(layers[m], False)]
        if not options:
            dims = ", ".join(f"{m} {list(layers[m])}" for m in sorted(layers, key=natural_key))
            return f"the Linear layers do not form one chain of matching widths ({dims})"
        pick = options[0] if len(options) == 1 else _numbered_first(options)
        if pick is None:
            listed = " and ".join(f"{m} {list(layers[m])}" for m in options)
            return (
                f"the order of the Linear layers {listed} cannot be told from the checkpoint: "
                "the shapes allow either, and the names are not numbered alike"
            )
        order.append(pick)
        remaining.remove(pick)
        width = layers[pick][0]
    return order


def _without(shapes: list[tuple[int, int]], shape: tuple[int, int]) -> list[tuple[int, int]]:
    """`shapes` less one occurrence of `shape`."""
    out = list(shapes)
    out.remove(shape)
    return out


def _chains_from(width: int, rest: list[tuple[int, int]]) -> bool:
    """Whether layers of these (out, in) shapes can all follow, in some order, a layer
    that outputs `width`: an Euler trail from `width` in the graph whose vertices are
    widths and whose edges are layers (in -> out)."""
    if not rest:
        return True
    surplus: dict[int, int] = {}  # out-degree minus in-degree
    links: dict[int, set[int]] = {}
    for out, inp in rest:
        surplus[inp] = surplus.get(inp, 0) + 1
        surplus[out] = surplus.get(out, 0) - 1
        links.setdefault(inp, set()).add(out)
        links.setdefault(out, set()).add(inp)
    if width not in links:
        return False
    unbalanced = sorted(d for v, d in surplus.items() if d != 0)
    # a closed trail (all balanced), or one from `width` (+1) to some other width (-1)
    if unbalanced and (unbalanced != [-1, 1] or surplus[width] != 1):
        return False
    seen, todo = {width}, [width]
    while todo:
        for v in links[todo.pop()] - seen:
            seen.add(v)
            todo.append(v)
    return len(seen) == len(links)


def _numbered_first(options: list[str]) -> str | None:
    """The lowest-numbered of names equal but for their numbers (`fc2`, `fc10`), else None."""
    stems = {re.sub(r"\d+", "#", m) for m in options}
    if len(stems) != 1:
        return None
    return min(options, key=natural_key)


def spec(shapes: Shapes) -> PermutationSpec:
    """One group per hidden layer: its output rows and bias, and the next layer's columns."""
    chain = layer_chain(shapes)
    groups: dict[str, list[tuple[str, int]]] = {}
    activations: dict[str, list[str]] = {}
    for index, (layer, following) in enumerate(zip(chain, chain[1:], strict=False)):
        group = f"P_{layer}"
        axes = [(f"{layer}.weight", 0)]
        if f"{layer}.bias" in shapes:
            axes.append((f"{layer}.bias", 0))
        axes.append((f"{following}.weight", 1))
        groups[group] = axes
        activations[group] = [_act_name(index)]
    return PermutationSpec(groups, activations=activations)


def _act_name(index: int) -> str:
    return f"activation_{index}"


class MLP(nn.Module):
    """Linear layers registered under the checkpoint's own names, applied in chain order."""

    def __init__(self, shapes: Shapes, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise MergerError(
                f"unknown MLP activation '{activation}'",
                hint=f"choose one of {', '.join(ACTIVATIONS)}",
            )
        chain = layer_chain(shapes)
        self.linears: list[nn.Linear] = []
        for name in chain:
            out_features, in_features = shapes[f"{name}.weight"]
            linear = nn.Linear(in_features, out_features, bias=f"{name}.bias" in shapes)
            self.linears.append(attach(self, name, linear))
        # stateless modules, registered so activation matching can hook them by name
        self.acts = [
            attach(self, _act_name(i), ACTIVATIONS[activation]()) for i in range(len(chain) - 1)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1) if x.dim() > 2 else x
        for linear, act in zip(self.linears, self.acts, strict=False):
            x = act(linear(x))
        return self.linears[-1](x)


def build(state: State, option: str = "relu") -> nn.Module:
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return load_exact(MLP(shapes, option or "relu"), state, "mlp")


def input_shape(shapes: Shapes) -> tuple[int, ...]:
    return (shapes[f"{layer_chain(shapes)[0]}.weight"][1],)


FAMILY = Family(
    name="mlp",
    description="a chain of Linear layers with ReLU between them (mlp:gelu, mlp:tanh… "
    "for another activation)",
    fits=fits,
    spec=spec,
    build=build,
    input_shape=input_shape,
    options=tuple(ACTIVATIONS),
)
