"""Residual networks rebuilt from a state dict: the structure shared by our three families.

A ResNet is a stem (conv1 + norm), stages `layer1`, `layer2`, ... of blocks `layerS.B`
(basic: conv1/conv2; bottleneck: conv1/conv2/conv3, each followed by a norm) with an
optional projection shortcut, then global average pooling and a linear head. Names of
the norm layers, the shortcut and the head differ between checkpoints (`Naming`); depth,
widths, block type, stem kernel and norm kind are read from the shapes.

Permutations: the residual stream adds a block's input to its output, so the stem, all
blocks' outputs and every shortcut-free block's input share one group, until a block with
a projection shortcut starts a new stream (one group per stage in practice). Each
block's inner convs get a group of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.alignment.spec import PermutationSpec
from core.architectures.base import Shapes, attach

_BN = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Naming:
    """How a checkpoint names its norms (`bn1` or `norm1`), its projection shortcut
    (`shortcut` or `downsample`) and its classifier (`fc` or `linear`)."""

    norm: str
    shortcut: str
    head: str = "fc"


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels at each pixel (Flax's LayerNorm on NHWC, as in Git Re-Basin).

    It commutes with permuting channels, unlike LayerNorm over (C, H, W).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def stage_names(shapes: Shapes) -> list[str]:
    stages, s = [], 1
    while any(k.startswith(f"layer{s}.") for k in shapes):
        stages.append(f"layer{s}")
        s += 1
    return stages


def block_names(shapes: Shapes, stage: str) -> list[str]:
    blocks, b = [], 0
    while f"{stage}.{b}.conv1.weight" in shapes:
        blocks.append(f"{stage}.{b}")
        b += 1
    return blocks


def convs_of(shapes: Shapes, block: str) -> list[str]:
    """conv1, conv2 (and conv3 for a bottleneck) of a block, by full name."""
    return [f"{block}.conv{i}" for i in (1, 2, 3) if f"{block}.conv{i}.weight" in shapes]


def norm_axes(shapes: Shapes, norm: str) -> list[tuple[str, int]]:
    return [(f"{norm}.{leaf}", 0) for leaf in _BN if f"{norm}.{leaf}" in shapes]


def conv_out_axes(shapes: Shapes, conv: str, norm: str) -> list[tuple[str, int]]:
    axes = [(f"{conv}.weight", 0)]
    axes += [(f"{conv}.bias", 0)] if f"{conv}.bias" in shapes else []
    return axes + norm_axes(shapes, norm)


def build_spec(shapes: Shapes, naming: Naming) -> PermutationSpec:
    """Groups for the residual streams and each block's inner convs (see module docstring)."""
    groups: dict[str, list[tuple[str, int]]] = {}
    acts: dict[str, list[str]] = {}
    stream = "P_stem"
    groups[stream] = conv_out_axes(shapes, "conv1", f"{naming.norm}1")
    acts[stream] = ["relu"]
    for stage in stage_names(shapes):
        for block in block_names(shapes, stage):
            convs = convs_of(shapes, block)
            short = f"{block}.{naming.shortcut}"
            groups[stream].append((f"{convs[0]}.weight", 1))
            if f"{short}.0.weight" in shapes:
                groups[stream].append((f"{short}.0.weight", 1))
                stream = f"P_{stage}" if block.endswith(".0") else f"P_{block}"
                groups[stream] = conv_out_axes(shapes, f"{short}.0", f"{short}.1")
                acts[stream] = []
            for i, conv in enumerate(convs[:-1], start=1):
                inner = f"P_{conv}"
                groups[inner] = conv_out_axes(shapes, conv, f"{block}.{naming.norm}{i}")
                groups[inner].append((f"{convs[i]}.weight", 1))
                acts[inner] = [f"{block}.relu{i}"]
            last = len(convs)
            groups[stream] += conv_out_axes(shapes, convs[-1], f"{block}.{naming.norm}{last}")
            acts[stream].append(block)
    groups[stream].append((f"{naming.head}.weight", 1))
    return PermutationSpec(groups, activations=acts)


def _norm(shapes: Shapes, name: str, channels: int) -> nn.Module:
    if f"{name}.running_mean" in shapes:
        return nn.BatchNorm2d(channels)
    return ChannelLayerNorm(channels)


def _conv(shapes: Shapes, name: str, stride: int) -> nn.Conv2d:
    out_ch, in_ch, kh, kw = shapes[f"{name}.weight"]
    return nn.Conv2d(
        in_ch,
        out_ch,
        (kh, kw),
        stride=stride,
        padding=(kh // 2, kw // 2),
        bias=f"{name}.bias" in shapes,
    )


class Block(nn.Module):
    """Basic or bottleneck block; the stride sits on the 3×3 conv (torchvision v1.5)."""

    def __init__(self, shapes: Shapes, name: str, naming: Naming, stride: int) -> None:
        super().__init__()
        self.pairs: list[tuple[nn.Module, nn.Module, nn.Module | None]] = []
        convs = convs_of(shapes, name)
        strided = next((c for c in convs if shapes[f"{c}.weight"][2] > 1), convs[0])
        for i, conv in enumerate(convs, start=1):
            layer = attach(self, f"conv{i}", _conv(shapes, conv, stride if conv == strided else 1))
            width = shapes[f"{conv}.weight"][0]
            norm = attach(
                self, f"{naming.norm}{i}", _norm(shapes, f"{name}.{naming.norm}{i}", width)
            )
            relu = attach(self, f"relu{i}", nn.ReLU()) if i < len(convs) else None
            self.pairs.append((layer, norm, relu))
        self.shortcut_name: str | None = None
        short = f"{name}.{naming.shortcut}"
        if f"{short}.0.weight" in shapes:
            proj = nn.Sequential(
                _conv(shapes, f"{short}.0", stride),
                _norm(shapes, f"{short}.1", shapes[f"{short}.0.weight"][0]),
            )
            attach(self, naming.shortcut, proj)
            self.shortcut_name = naming.shortcut
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv, norm, relu in self.pairs:
            out = norm(conv(out))
            out = relu(out) if relu is not None else out
        skip = x if self.shortcut_name is None else getattr(self, self.shortcut_name)(x)
        return self.relu_out(out + skip)


class ResNet(nn.Module):
    """Stem, stages of blocks, global average pool, a linear head, under the checkpoint's
    names.

    A 7×7 stem means ImageNet style (stride 2 and a 3×3 max-pool); a 3×3 stem means CIFAR
    style (stride 1, no pool). The first block of every stage after the first has stride 2.
    """

    def __init__(self, shapes: Shapes, naming: Naming) -> None:
        super().__init__()
        kernel = shapes["conv1.weight"][2]
        imagenet = kernel >= 7
        self.conv1 = _conv(shapes, "conv1", 2 if imagenet else 1)
        attach(self, f"{naming.norm}1", _norm(shapes, f"{naming.norm}1", shapes["conv1.weight"][0]))
        self.stem_norm_name = f"{naming.norm}1"
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet else nn.Identity()
        self.blocks: list[Block] = []
        for s, stage in enumerate(stage_names(shapes)):
            container = attach(self, stage, nn.Module())
            for b, block in enumerate(block_names(shapes, stage)):
                stride = 2 if s > 0 and b == 0 else 1
                self.blocks.append(attach(container, str(b), Block(shapes, block, naming, stride)))
        out_f, in_f = shapes[f"{naming.head}.weight"]
        attach(self, naming.head, nn.Linear(in_f, out_f, bias=f"{naming.head}.bias" in shapes))
        self.head_name = naming.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(getattr(self, self.stem_norm_name)(self.conv1(x))))
        for block in self.blocks:
            x = block(x)
        return getattr(self, self.head_name)(x.mean(dim=(2, 3)))
