"""VGG-style CNNs with torchvision's names: `features.N` (conv3x3 [+BN] + ReLU, max-pools)
and `classifier.N` (Linear layers with ReLU and dropout between).

Where the pools sit is read from the gaps in the indices: after a conv come its BN (if
any) and a ReLU; one more free index before the next conv is a max-pool. After the last
conv the weights cannot tell: torchvision pools there (option `last-pool`, the default),
other code may not (`no-last-pool`). Given the data's image size, `for_input` picks the
one that brings the classifier exactly the spatial size it takes. The first Linear layer's inputs are the
last conv's C channels times S = s·s spatial positions (flattened channel-major), so its
input axis is a blocked axis of the last conv's group (`PermutationSpec.blocks`); an
adaptive average pool to s×s before flattening makes any input size work.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from core.alignment.spec import PermutationSpec
from core.architectures import mlp
from core.architectures.base import Family, Shapes, State, attach, load_exact, natural_key
from core.errors import MergerError


def _convs(shapes: Shapes) -> list[int]:
    return sorted(
        int(name.split(".")[1])
        for name, shape in shapes.items()
        if name.startswith("features.") and name.endswith(".weight") and len(shape) == 4
    )


def _has_bn(shapes: Shapes, index: int) -> bool:
    return len(shapes.get(f"features.{index + 1}.weight", ())) == 1


def _classifier_shapes(shapes: Shapes) -> dict[str, tuple[int, ...]]:
    return {k: v for k, v in shapes.items() if k.startswith("classifier.")}


def _layout(shapes: Shapes) -> list[tuple[int, bool, bool]] | str:
    """(conv index, has BN, pool after) per conv, or the reason it is not a VGG."""
    convs = _convs(shapes)
    if not convs:
        return "no 'features.N.weight' conv kernels"
    out = []
    for pos, index in enumerate(convs):
        used = 3 if _has_bn(shapes, index) else 2
        gap = (convs[pos + 1] - index) if pos + 1 < len(convs) else used + 1
        if gap not in (used, used + 1):
            return f"features.{index} is followed by {gap - 1} layers (expected ReLU [+ pool])"
        out.append((index, _has_bn(shapes, index), gap == used + 1))
    return out


def fits(shapes: Shapes) -> str | None:
    for name in shapes:
        head, index, *_ = name.split(".") + [""]
        if head not in ("features", "classifier") or not index.isdigit():
            return f"tensor '{name}' is outside features.N / classifier.N"
    layout = _layout(shapes)
    if isinstance(layout, str):
        return layout
    known = set()
    for index, bn, _ in layout:
        known |= {f"features.{index}.weight", f"features.{index}.bias"}
        if bn:
            known |= {f"features.{index + 1}.{leaf}" for leaf in _BN_LEAVES}
    stray = sorted(set(k for k in shapes if k.startswith("features.")) - known, key=natural_key)
    if stray:
        return f"tensor '{stray[0]}' is not part of a conv or its BatchNorm"
    convs = [shapes[f"features.{i}.weight"] for i, _, _ in layout]
    for prev, cur in zip(convs, convs[1:], strict=False):
        if prev[0] != cur[1]:
            return f"conv widths do not chain ({prev[0]} outputs feed {cur[1]} inputs)"
    head = _classifier_shapes(shapes)
    reason = mlp.fits(head) if head else "no classifier.N Linear layers"
    if reason:
        return f"classifier: {reason}"
    first = shapes[f"{mlp.layer_chain(head)[0]}.weight"]
    spatial, rest = divmod(first[1], convs[-1][0])
    if rest or math.isqrt(spatial) ** 2 != spatial:
        return (
            f"the classifier's {first[1]} inputs are not {convs[-1][0]} channels "
            "times a square spatial size"
        )
    return None


def _relu_after(linear: str) -> str:
    """torchvision puts a hidden Linear's ReLU at the next index: classifier.0 → classifier.1."""
    return f"classifier.{int(linear.split('.')[1]) + 1}"


_BN_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _checked(shapes: Shapes) -> list[tuple[int, bool, bool]]:
    reason = fits(shapes)
    if reason is not None:
        raise MergerError(f"not a VGG: {reason}", hint="pick another architecture")
    return _layout(shapes)  # type: ignore[return-value]


def spec(shapes: Shapes) -> PermutationSpec:
    """One group per conv (its outputs, bias, BN, next layer's inputs) and per hidden Linear."""
    layout = _checked(shapes)
    head = mlp.layer_chain(_classifier_shapes(shapes))
    groups: dict[str, list[tuple[str, int]]] = {}
    activations: dict[str, list[str]] = {}
    blocks: dict[tuple[str, int], int] = {}
    for pos, (index, bn, _) in enumerate(layout):
        layer = f"features.{index}"
        axes = [(f"{layer}.weight", 0)]
        axes += [(f"{layer}.bias", 0)] if f"{layer}.bias" in shapes else []
        if bn:
            axes += [(f"features.{index + 1}.{leaf}", 0) for leaf in _BN_LEAVES[:4]]
            axes = [a for a in axes if a[0] in shapes]
        if pos + 1 < len(layout):
            axes.append((f"features.{layout[pos + 1][0]}.weight", 1))
        else:
            consumer = f"{head[0]}.weight"
            axes.append((consumer, 1))
            blocks[(consumer, 1)] = shapes[consumer][1] // shapes[f"{layer}.weight"][0]
        groups[f"P_{layer}"] = axes
        activations[f"P_{layer}"] = [f"features.{index + (2 if bn else 1)}"]
    groups.update(mlp.spec(_classifier_shapes(shapes)).groups)
    for name in head[:-1]:
        activations[f"P_{name}"] = [_relu_after(name)]
    return PermutationSpec(groups, blocks=blocks, activations=activations)


OPTIONS = ("last-pool", "no-last-pool")


class VGG(nn.Module):
    """features → adaptive average pool to s×s → flatten → classifier, under torchvision names."""

    def __init__(self, shapes: Shapes, last_pool: bool = True) -> None:
        super().__init__()
        layout = _checked(shapes)
        layout[-1] = (*layout[-1][:2], last_pool)
        self.features = nn.Sequential()
        for index, bn, pool in layout:
            out_ch, in_ch, kh, kw = shapes[f"features.{index}.weight"]
            conv = nn.Conv2d(
                in_ch,
                out_ch,
                (kh, kw),
                padding=(kh // 2, kw // 2),
                bias=f"features.{index}.bias" in shapes,
            )
            parts: list[nn.Module] = [conv]
            if bn:
                parts.append(nn.BatchNorm2d(out_ch))
            parts.append(nn.ReLU())
            if pool:
                parts.append(nn.MaxPool2d(2, 2))
            for offset, part in enumerate(parts):
                self.features.add_module(str(index + offset), part)
        side = _classifier_side(shapes)
        self.avgpool = nn.AdaptiveAvgPool2d((side, side))
        self.classifier = nn.Module()
        self.linears: list[nn.Linear] = []
        chain = mlp.layer_chain(_classifier_shapes(shapes))
        for name in chain:
            out_f, in_f = shapes[f"{name}.weight"]
            self.linears.append(
                attach(self, name, nn.Linear(in_f, out_f, bias=f"{name}.bias" in shapes))
            )
        self.relus = [attach(self, _relu_after(name), nn.ReLU()) for name in chain[:-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        for linear, relu in zip(self.linears, self.relus, strict=False):
            x = relu(linear(x))
        return self.linears[-1](x)


def build(state: State, option: str = "") -> nn.Module:
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return load_exact(VGG(shapes, last_pool=option != "no-last-pool"), state, "vgg")


def _classifier_side(shapes: Shapes) -> int:
    """s: the first Linear layer takes the last conv's channels at s×s positions."""
    last = shapes[f"features.{_checked(shapes)[-1][0]}.weight"][0]
    first = shapes[f"{mlp.layer_chain(_classifier_shapes(shapes))[0]}.weight"]
    return math.isqrt(first[1] // last)


def input_shape(shapes: Shapes) -> tuple[int, ...]:
    """(channels, size, size) with size = s · 2^pools, e.g. 32 for CIFAR VGGs, 224 for ImageNet."""
    layout = _checked(shapes)
    channels = shapes[f"features.{layout[0][0]}.weight"][1]
    side = _classifier_side(shapes) * 2 ** sum(pool for _, _, pool in layout)
    return (channels, side, side)


def for_input(
    shapes: Shapes, example: tuple[int, ...], option: str, chosen: bool
) -> tuple[str, list[str]]:
    """The pooling after the last conv that brings images of the data's size to the
    classifier at exactly the s×s it takes (unless the user chose), and a warning where
    the adaptive pool would have to stretch a smaller map: values repeated, not a
    forward pass the model was trained with."""
    if len(example) != 3:
        return option, []
    height, width = example[1:]
    side = _classifier_side(shapes)
    pools = sum(pool for _, _, pool in _checked(shapes)[:-1])

    def reach(last_pool: bool) -> tuple[int, int]:
        return height >> (pools + last_pool), width >> (pools + last_pool)

    notes = []
    if not chosen and reach(True) != (side, side) and reach(False) == (side, side):
        option = "no-last-pool"
        notes.append(
            f"the data's {height}×{width} images reach the classifier at the {side}×{side} "
            "its first Linear layer takes only without a max-pool after the last conv, so "
            "none is assumed there (vgg:no-last-pool; vgg:last-pool to have one)"
        )
    got = reach(option != "no-last-pool")
    if got[0] < side or got[1] < side:
        notes.append(
            f"the data's {height}×{width} images reach the classifier at {got[0]}×{got[1]}, "
            f"smaller than the {side}×{side} its first Linear layer takes: the adaptive "
            "pool repeats values to fill it, so the model probably does not run as trained. "
            "Check the architecture (its pools; vgg:no-last-pool) or give images of the size "
            "it was trained on"
        )
    return option, notes


FAMILY = Family(
    name="vgg",
    description="VGG-style CNN: features.N conv3x3 [+BatchNorm] + ReLU with max-pools "
    "(one after the last conv, as in torchvision; vgg:no-last-pool for none), then "
    "classifier.N Linear layers (torchvision names)",
    fits=fits,
    spec=spec,
    build=build,
    input_shape=input_shape,
    options=OPTIONS,
    for_input=for_input,
)
