"""Random-init state dicts for each family, at any size: for tests, benchmarks and demos.

Each function writes the shapes a real checkpoint of that family has, builds the
family's module from them under `torch.manual_seed(seed)` (PyTorch's default inits) and
returns its state dict, so the result is exactly what `resolve_architecture` expects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.architectures.mlp import MLP
from core.architectures.resnet import Naming, ResNet
from core.architectures.resnet_families import CIFAR, TORCHVISION, TORCHVISION_DEPTHS
from core.architectures.vgg import VGG


def mlp_state(
    widths: Sequence[int], *, prefix: str = "layers.", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Linear(w0, w1) - act - Linear(w1, w2) ... named like nn.Sequential: `layers.0`, `.2`..."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:], strict=False)):
        shapes[f"{prefix}{2 * i}.weight"] = (fan_out, fan_in)
        shapes[f"{prefix}{2 * i}.bias"] = (fan_out,)
    torch.manual_seed(seed)
    return dict(MLP(shapes).state_dict())


def vgg_state(
    cfg: Sequence[int | str] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    *,
    batchnorm: bool = False,
    in_channels: int = 3,
    hidden: Sequence[int] = (512, 512),
    num_classes: int = 10,
    side: int = 1,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """torchvision-named VGG; `cfg` lists conv widths and "M" for max-pools (default VGG-11)."""
    shapes: dict[str, tuple[int, ...]] = {}
    index, channels = 0, in_channels
    for item in cfg:
        if item == "M":
            index += 1
            continue
        shapes[f"features.{index}.weight"] = (int(item), channels, 3, 3)
        shapes[f"features.{index}.bias"] = (int(item),)
        if batchnorm:
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"features.{index + 1}.{leaf}"] = (int(item),)
            shapes[f"features.{index + 1}.num_batches_tracked"] = ()
        index += 3 if batchnorm else 2
        channels = int(item)
    widths = [channels * side * side, *hidden, num_classes]
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:], strict=False)):
        shapes[f"classifier.{3 * i}.weight"] = (fan_out, fan_in)
        shapes[f"classifier.{3 * i}.bias"] = (fan_out,)
    torch.manual_seed(seed)
    return dict(VGG(shapes).state_dict())


def resnet20_state(
    width: int = 1,
    *,
    norm: str = "layernorm",
    blocks_per_stage: int = 3,
    num_classes: int = 10,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """CIFAR ResNet-(6n+2) with widths 16·w, 32·w, 64·w; `norm` is layernorm or batchnorm."""
    if norm not in ("layernorm", "batchnorm"):
        raise ValueError(f"norm must be 'layernorm' or 'batchnorm', not {norm!r}")
    widths = [16 * width, 32 * width, 64 * width]
    shapes = _resnet_shapes(
        CIFAR, [blocks_per_stage] * 3, widths, False, 3, num_classes, norm == "batchnorm"
    )
    torch.manual_seed(seed)
    return dict(ResNet(shapes, CIFAR).state_dict())


def resnet_state(
    depth: int = 18,
    *,
    width: int = 64,
    num_classes: int = 1000,
    cifar_stem: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """torchvision ResNet-18/34/50/101/152 names and shapes; `width` is the stem width (64)."""
    if depth not in TORCHVISION_DEPTHS:
        raise ValueError(f"depth must be one of {sorted(TORCHVISION_DEPTHS)}, not {depth}")
    layers, bottleneck = TORCHVISION_DEPTHS[depth]
    widths = [width, 2 * width, 4 * width, 8 * width]
    stem = 3 if cifar_stem else 7
    shapes = _resnet_shapes(TORCHVISION, layers, widths, bottleneck, stem, num_classes, True)
    torch.manual_seed(seed)
    return dict(ResNet(shapes, TORCHVISION).state_dict())


def _resnet_shapes(
    naming: Naming,
    layers: Sequence[int],
    widths: Sequence[int],
    bottleneck: bool,
    stem: int,
    num_classes: int,
    batchnorm: bool,
) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (widths[0], 3, stem, stem)}
    _norm(shapes, f"{naming.norm}1", widths[0], batchnorm)
    channels = widths[0]
    expansion = 4 if bottleneck else 1
    for s, (count, width) in enumerate(zip(layers, widths, strict=True), start=1):
        for b in range(count):
            block = f"layer{s}.{b}"
            out = width * expansion
            kernels = [(width, channels, 1), (width, width, 3), (out, width, 1)]
            if not bottleneck:
                kernels = [(width, channels, 3), (out, width, 3)]
            for i, (o, c, k) in enumerate(kernels, start=1):
                shapes[f"{block}.conv{i}.weight"] = (o, c, k, k)
                _norm(shapes, f"{block}.{naming.norm}{i}", o, batchnorm)
            if (s > 1 and b == 0) or channels != out:
                shapes[f"{block}.{naming.shortcut}.0.weight"] = (out, channels, 1, 1)
                _norm(shapes, f"{block}.{naming.shortcut}.1", out, batchnorm)
            channels = out
    shapes["fc.weight"], shapes["fc.bias"] = (num_classes, channels), (num_classes,)
    return shapes


def _norm(shapes: dict[str, tuple[int, ...]], name: str, width: int, batchnorm: bool) -> None:
    shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (width,)
    if batchnorm:
        shapes[f"{name}.running_mean"] = shapes[f"{name}.running_var"] = (width,)
        shapes[f"{name}.num_batches_tracked"] = ()
