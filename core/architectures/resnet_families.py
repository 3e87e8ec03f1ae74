"""The three ResNet families and their names.

* `resnet20`: CIFAR ResNet-(6n+2) (ResNet-20 when each of the 3 stages has 3 blocks), any
  width multiplier, LayerNorm (Git Re-Basin's choice) or BatchNorm. Our names:
  `conv1`, `norm1`, `layerS.B.conv1`, `layerS.B.norm1`, `layerS.B.conv2`, `layerS.B.norm2`,
  `layerS.B.shortcut.0` (1×1 conv) / `.shortcut.1` (norm), `fc`. A norm with
  `running_mean` is BatchNorm2d; one without is a LayerNorm over channels
  (`resnet.ChannelLayerNorm`). The widespread CIFAR code of kuangliu/akamaster (projection
  shortcuts, "option B") names its norms `bn1`, `bn2` and its head `linear` or `fc`: the
  same network, also accepted.
* `resnet18`: torchvision names with basic blocks (`conv1`, `bn1`, `layerS.B.bn2`,
  `layerS.B.downsample.0/1`, `fc`); any depth, so ResNet-34 loads too, and a 3×3 stem
  (CIFAR variants) works as well as the 7×7 ImageNet stem.
* `resnet50`: the same with bottleneck blocks (conv3/bn3): ResNet-50/101/152 and wide variants.
"""

from __future__ import annotations

import re

from torch import nn

from core.alignment.spec import PermutationSpec
from core.architectures.base import Family, Shapes, State, load_exact
from core.architectures.resnet import Naming, ResNet, build_spec, convs_of, stage_names
from core.errors import MergerError

CIFAR = Naming(norm="norm", shortcut="shortcut")
CIFAR_BN = (Naming("bn", "shortcut", "linear"), Naming("bn", "shortcut", "fc"))
TORCHVISION = Naming(norm="bn", shortcut="downsample")
_LEAVES = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_NAME_MISMATCH = "tensor "


def _pattern(naming: Naming) -> re.Pattern[str]:
    n, s = naming.norm, naming.shortcut
    return re.compile(
        rf"(conv1\.(weight|bias)|{n}1\.{_LEAVES}|{naming.head}\.(weight|bias)"
        rf"|layer\d+\.\d+\.(conv\d\.(weight|bias)|{n}\d\.{_LEAVES}|{s}\.[01]\.{_LEAVES}))"
    )


def _fits(shapes: Shapes, naming: Naming, bottleneck: bool) -> str | None:
    pattern = _pattern(naming)
    for name in shapes:
        if not pattern.fullmatch(name):
            return (
                f"{_NAME_MISMATCH}'{name}' is not a {naming.norm}/{naming.shortcut}-style "
                "ResNet name"
            )
    head = f"{naming.head}.weight"
    if len(shapes.get("conv1.weight", ())) != 4 or len(shapes.get(head, ())) != 2:
        return f"no 4-D conv1.weight stem and 2-D {head} head"
    if f"{naming.norm}1.weight" not in shapes:
        return f"no stem norm '{naming.norm}1'"
    stages = stage_names(shapes)
    if not stages:
        return "no layer1 stage"
    blocks = [k.rsplit(".", 2)[0] for k in shapes if k.endswith(".conv1.weight") and "." in k[6:]]
    for block in blocks:
        has_three = len(convs_of(shapes, block)) == 3
        if has_three != bottleneck:
            kind = "bottleneck (conv3)" if has_three else "basic (conv1, conv2)"
            return f"block '{block}' is a {kind} block"
    reason = _sizes_agree(build_spec(shapes, naming), shapes)
    if reason is None and naming in CIFAR_BN and f".{naming.shortcut}." not in " ".join(shapes):
        # bn-named blocks and no shortcut at all: torchvision's names fit as well (resnet18)
        return f"bn-named blocks without any '{naming.shortcut}' projection"
    return reason


def _sizes_agree(spec: PermutationSpec, shapes: Shapes) -> str | None:
    for group, axes in spec.groups.items():
        sizes = {shapes[t][a] for t, a in axes if t in shapes and a < len(shapes[t])}
        missing = [t for t, _ in axes if t not in shapes]
        if missing or len(sizes) != 1:
            return f"widths in '{group}' do not agree ({missing or sorted(sizes)})"
    return None


def _input_shape(shapes: Shapes) -> tuple[int, ...]:
    channels, kernel = shapes["conv1.weight"][1], shapes["conv1.weight"][2]
    side = 224 if kernel >= 7 else 32
    return (channels, side, side)


def _family(name: str, description: str, namings: tuple[Naming, ...], bottleneck: bool) -> Family:
    def naming_of(shapes: Shapes) -> tuple[Naming | None, str | None]:
        """The first naming the checkpoint fits; else why not, from the naming whose
        names it has (its shapes are the problem) if any."""
        reasons = [_fits(shapes, naming, bottleneck) for naming in namings]
        for naming, reason in zip(namings, reasons, strict=True):
            if reason is None:
                return naming, None
        named = [r for r in reasons if r is not None and not r.startswith(_NAME_MISMATCH)]
        return None, (named or reasons)[0]

    def fits(shapes: Shapes) -> str | None:
        return naming_of(shapes)[1]

    def spec(shapes: Shapes) -> PermutationSpec:
        naming, reason = naming_of(shapes)
        if naming is None:
            raise MergerError(f"not a {name} model: {reason}", hint="pick another architecture")
        return build_spec(shapes, naming)

    def build(state: State, option: str = "") -> nn.Module:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        spec(shapes)  # validates
        naming = naming_of(shapes)[0]
        assert naming is not None
        return load_exact(ResNet(shapes, naming), state, name)

    def label(shapes: Shapes) -> str:
        blocks = _blocks_per_stage(shapes)
        if TORCHVISION in namings:
            return _DEPTHS.get((bottleneck, blocks), name)
        # CIFAR ResNets are named by depth, 2 + 2 per basic block: a kuangliu-style
        # ResNet-18 (4 stages of 2 blocks) is this family's network, not a ResNet-20
        depth = 2 + 2 * sum(blocks)
        return name if f"resnet{depth}" == name else f"{name} (CIFAR ResNet-{depth})"

    return Family(name, description, fits, spec, build, _input_shape, label=label)


# torchvision's depths: blocks per stage, and whether they are bottlenecks
TORCHVISION_DEPTHS = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}
# the same, looked up by (bottleneck, blocks per stage); other counts keep the family name
_DEPTHS = {(neck, layers): f"resnet{depth}" for depth, (layers, neck) in TORCHVISION_DEPTHS.items()}


def _blocks_per_stage(shapes: Shapes) -> tuple[int, ...]:
    """How many blocks each stage has, from the `layerS.B.conv1.weight` names."""
    counts: dict[int, int] = {}
    for name in shapes:
        match = re.fullmatch(r"layer(\d+)\.(\d+)\.conv1\.weight", name)
        if match:
            stage, block = int(match[1]), int(match[2])
            counts[stage] = max(counts.get(stage, 0), block + 1)
    return tuple(counts[s] for s in sorted(counts))


RESNET20 = _family(
    "resnet20",
    "CIFAR ResNet-20 (any 6n+2 depth and width), LayerNorm or BatchNorm; names conv1, norm1, "
    "layerS.B.conv1/norm1/conv2/norm2, layerS.B.shortcut.0/1, fc (or bn1/bn2 and a linear "
    "or fc head, as in the common CIFAR code with projection shortcuts)",
    (CIFAR, *CIFAR_BN),
    bottleneck=False,
)
RESNET18 = _family(
    "resnet18",
    "torchvision ResNet with basic blocks (ResNet-18/34): conv1, bn1, layerS.B.*, downsample, fc",
    (TORCHVISION,),
    bottleneck=False,
)
RESNET50 = _family(
    "resnet50",
    "torchvision ResNet with bottleneck blocks (ResNet-50/101/152): conv1, bn1, layerS.B.conv3, "
    "downsample, fc",
    (TORCHVISION,),
    bottleneck=True,
)
