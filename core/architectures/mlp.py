"""Multi-layer perceptrons: a chain of Linear layers with one elementwise activation.

Any naming works (`layers.0`/`layers.2` from nn.Sequential, `fc1`/`fc2`, `net.0`, plain
`0`): the layers are put in order by name (numbers compared as numbers) and the order is
checked against the shape chain (each layer's inputs = the previous layer's outputs);
if names do not give a valid chain, the shapes alone must. The activation is not in the
checkpoint, so it is an option (`mlp:relu`, the default, `mlp:gelu`, `mlp:tanh`, ...).
Inputs with more than one dimension are flattened, as for MNIST-style images.
"""

from __future__ import annotations

import torch
from torch import nn

from core.alignment.spec import PermutationSpec
from core.architectures.base import Family, Shapes, State, attach, load_exact, natural_key
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
        raise MergerError(f"not an MLP: {reason}", hint="pick another architecture")
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
    by_name = sorted(layers, key=natural_key)
    if _is_chain(by_name, layers):
        return by_name
    by_shape = _chain_by_shapes(layers)
    if by_shape is None:
        dims = ", ".join(f"{m} {list(layers[m])}" for m in by_name)
        return f"the Linear layers do not form one chain of matching widths ({dims})"
    return by_shape


def _is_chain(order: list[str], layers: dict[str, tuple[int, int]]) -> bool:
    return all(layers[a][0] == layers[b][1] for a, b in zip(order, order[1:], strict=False))


def _chain_by_shapes(layers: dict[str, tuple[int, int]]) -> list[str] | None:
    """The unique ordering where widths chain up, or None if there is none or several."""
    names = sorted(layers, key=natural_key)
    outs = [layers[m][0] for m in names]
    starts = [m for m in names if layers[m][1] not in outs or len(names) == 1]
    if len(starts) != 1:
        return None
    order = starts
    remaining = [m for m in names if m != starts[0]]
    while remaining:
        nxt = [m for m in remaining if layers[m][1] == layers[order[-1]][0]]
        if len(nxt) != 1:
            return None
        order.append(nxt[0])
        remaining.remove(nxt[0])
    return order


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
    description="a chain of Linear layers with one elementwise activation (option: "
    + ", ".join(ACTIVATIONS)
    + ")",
    fits=fits,
    spec=spec,
    build=build,
    input_shape=input_shape,
    options=tuple(ACTIVATIONS),
)
