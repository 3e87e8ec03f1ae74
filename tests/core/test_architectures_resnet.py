"""ResNet families: torchvision-named ResNet-18/50 and the CIFAR ResNet-20 (LN and BN).

The reference models below are written from torchvision's documented design (7×7/2 stem
and 3×3/2 max-pool, stride on the 3×3 conv, 1×1 projection shortcuts, expansion 4 in
bottlenecks) so that the builder is checked against an independent implementation.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.architectures import FAMILIES, detect_family, resolve_architecture
from core.architectures.base import shapes_of
from core.architectures.resnet import ChannelLayerNorm
from core.errors import MergerError


class _RefBlock(nn.Module):
    def __init__(self, cin, width, stride, bottleneck, norm="bn", short="downsample", ln=False):
        super().__init__()
        out = width * (4 if bottleneck else 1)
        make_norm = ChannelLayerNorm if ln else nn.BatchNorm2d
        self.n, self.norm, self.short = (3 if bottleneck else 2), norm, short
        if bottleneck:
            dims = [(cin, width, 1, 1), (width, width, 3, stride), (width, out, 1, 1)]
        else:
            dims = [(cin, width, 3, stride), (width, out, 3, 1)]
        for i, (a, b, k, s) in enumerate(dims, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(a, b, k, s, k // 2, bias=False))
            self.add_module(f"{norm}{i}", make_norm(b))
        if stride != 1 or cin != out:
            proj = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), make_norm(out))
            self.add_module(short, proj)

    def forward(self, x):
        y = x
        for i in range(1, self.n + 1):
            y = getattr(self, f"{self.norm}{i}")(getattr(self, f"conv{i}")(y))
            y = torch.relu(y) if i < self.n else y
        skip = getattr(self, self.short)(x) if hasattr(self, self.short) else x
        return torch.relu(y + skip)


class _RefResNet(nn.Module):
    def __init__(self, layers, widths, bottleneck, classes=10, stem=7, **names):
        super().__init__()
        self.head = names.pop("head", "fc")
        norm = names.get("norm", "bn")
        ln = names.get("ln", False)
        self.norm = norm
        self.conv1 = nn.Conv2d(3, widths[0], stem, 2 if stem == 7 else 1, stem // 2, bias=False)
        self.add_module(f"{norm}1", (ChannelLayerNorm if ln else nn.BatchNorm2d)(widths[0]))
        self.pool = nn.MaxPool2d(3, 2, 1) if stem == 7 else nn.Identity()
        cin = widths[0]
        self.stages = []
        for s, (n, w) in enumerate(zip(layers, widths, strict=True), start=1):
            blocks = []
            for b in range(n):
                stride = 2 if s > 1 and b == 0 else 1
                blocks.append(_RefBlock(cin, w, stride, bottleneck, **names))
                cin = w * (4 if bottleneck else 1)
            self.add_module(f"layer{s}", nn.Sequential(*blocks))
            self.stages.append(f"layer{s}")
        self.add_module(self.head, nn.Linear(cin, classes))

    def forward(self, x):
        x = self.pool(torch.relu(getattr(self, f"{self.norm}1")(self.conv1(x))))
        for stage in self.stages:
            x = getattr(self, stage)(x)
        return getattr(self, self.head)(x.mean((2, 3)))


def _randomize(net: nn.Module) -> dict[str, torch.Tensor]:
    """Random norm affines and running statistics, so the self-test sees every tensor."""
    gen = torch.Generator().manual_seed(0)
    state = net.state_dict()
    for name, value in state.items():
        if name.endswith(("running_var",)) or (value.dim() == 1 and name.endswith("weight")):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
        elif name.endswith(("running_mean", "bias")):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
    net.eval()
    return dict(net.state_dict())


CASES = {
    "resnet18": dict(layers=[2, 2, 2, 2], widths=[8, 16, 32, 64], bottleneck=False),
    "resnet18-cifar-stem": dict(
        layers=[2, 2, 2, 2], widths=[8, 16, 32, 64], bottleneck=False, stem=3
    ),
    "resnet34": dict(layers=[3, 4, 6, 3], widths=[4, 8, 8, 16], bottleneck=False),
    "resnet50": dict(layers=[3, 4, 6, 3], widths=[8, 16, 32, 64], bottleneck=True),
    "resnet20-ln": dict(
        layers=[3, 3, 3],
        widths=[16, 32, 64],
        bottleneck=False,
        stem=3,
        norm="norm",
        short="shortcut",
        ln=True,
    ),
    "resnet20-bn": dict(
        layers=[3, 3, 3],
        widths=[32, 64, 128],
        bottleneck=False,
        stem=3,
        norm="norm",
        short="shortcut",
    ),
    # the common CIFAR code (kuangliu, akamaster with projection shortcuts)
    "resnet20-kuangliu": dict(
        layers=[3, 3, 3],
        widths=[16, 32, 64],
        bottleneck=False,
        stem=3,
        norm="bn",
        short="shortcut",
        head="linear",
    ),
    "resnet20-bn-names-fc": dict(
        layers=[3, 3, 3], widths=[16, 32, 64], bottleneck=False, stem=3, short="shortcut"
    ),
    # kuangliu/pytorch-cifar's ResNet18: the CIFAR naming, 4 stages of 2 blocks
    "cifar-resnet18-kuangliu": dict(
        layers=[2, 2, 2, 2],
        widths=[8, 16, 32, 64],
        bottleneck=False,
        stem=3,
        norm="bn",
        short="shortcut",
        head="linear",
    ),
    "resnet32-ln": dict(
        layers=[5, 5, 5],
        widths=[8, 16, 32],
        bottleneck=False,
        stem=3,
        norm="norm",
        short="shortcut",
        ln=True,
    ),
}
FAMILY_OF = {  # the name each is reported as: a torchvision ResNet's depth, else its family
    "resnet18": "resnet18",
    "resnet18-cifar-stem": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "resnet20-ln": "resnet20",
    "resnet20-bn": "resnet20",
    "resnet20-kuangliu": "resnet20",
    "resnet20-bn-names-fc": "resnet20",
    "cifar-resnet18-kuangliu": "resnet20 (CIFAR ResNet-18)",
    "resnet32-ln": "resnet20 (CIFAR ResNet-32)",
}


def _ref(case: str) -> _RefResNet:
    torch.manual_seed(0)
    kw = dict(CASES[case])
    names = {k: kw.pop(k) for k in ("norm", "short", "ln", "head") if k in kw}
    return _RefResNet(**kw, **names)


@pytest.mark.parametrize("case", list(CASES))
def test_detected_built_faithfully_and_invariant(case):
    ref = _ref(case)
    state = _randomize(ref)
    arch = resolve_architecture(None, state)
    assert arch.name == FAMILY_OF[case]
    net = arch.build(state)
    assert list(net.state_dict()) == list(state)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(net(x), ref(x), atol=1e-5)
    assert arch.spec.self_test(arch.build, state, x) < 1e-9


def test_resnet18_groups_one_per_stage_stream_and_one_per_block():
    state = _randomize(_ref("resnet18"))
    spec = resolve_architecture("resnet18", state).spec
    streams = sorted(g for g in spec.groups if g.count(".") == 0)
    assert streams == ["P_layer2", "P_layer3", "P_layer4", "P_stem"]
    assert len(spec.groups) == 4 + 8  # 8 basic blocks, one inner group each
    # layer1 has no projection, so its stream is the stem's
    assert ("layer1.1.bn2.running_var", 0) in spec.groups["P_stem"]
    assert ("fc.weight", 1) in spec.groups["P_layer4"]
    assert all("num_batches_tracked" not in t for t in spec.tensors)


def test_resnet50_layer1_starts_its_own_stream():
    state = _randomize(_ref("resnet50"))
    spec = resolve_architecture(None, state).spec
    assert ("layer1.0.downsample.0.weight", 1) in spec.groups["P_stem"]
    assert spec.sizes["P_stem"] == 8 and spec.sizes["P_layer1"] == 32
    assert len(spec.groups) == 5 + 2 * 16


def test_resnet20_norm_kind_is_read_from_the_keys():
    ln = resolve_architecture(None, _randomize(_ref("resnet20-ln")))
    bn_state = _randomize(_ref("resnet20-bn"))
    bn = resolve_architecture(None, bn_state)
    assert isinstance(ln.build(_randomize(_ref("resnet20-ln"))).norm1, ChannelLayerNorm)
    assert isinstance(bn.build(bn_state).norm1, nn.BatchNorm2d)
    assert bn.spec.sizes["P_stem"] == 32 and ln.input_shape == (3, 32, 32)


@pytest.mark.slow
def test_full_size_resnet50_is_invariant():
    torch.manual_seed(0)
    ref = _RefResNet([3, 4, 6, 3], [64, 128, 256, 512], True, classes=1000)
    state = _randomize(ref)
    arch = resolve_architecture(None, state)
    assert arch.input_shape == (3, 224, 224)
    assert sum(v.numel() for k, v in state.items() if "num_batches" not in k) > 25_000_000
    assert arch.spec.self_test(arch.build, state, torch.randn(1, 3, 32, 32)) < 1e-9


def test_wrong_family_is_refused_with_a_reason():
    state = _randomize(_ref("resnet18"))
    with pytest.raises(MergerError, match="basic"):
        resolve_architecture("resnet50", state)
    with pytest.raises(MergerError, match="not a 'resnet20' model"):
        resolve_architecture("resnet20", state)


def test_every_family_refuses_the_others():
    state = _randomize(_ref("resnet50"))
    shapes = shapes_of(state)
    assert [name for name, f in FAMILIES.items() if f.fits(shapes) is None] == ["resnet50"]
    assert detect_family(shapes) == "resnet50"


def test_zero_padding_shortcuts_are_refused_for_their_widths_not_their_names():
    """akamaster's default "option A" shortcut pads channels with zeros and has no weights:
    the stages' widths cannot share a residual stream. The reason given is that, from the
    naming the checkpoint uses, not a complaint about names."""
    state = _randomize(_ref("resnet20-kuangliu"))
    state = {k: v for k, v in state.items() if ".shortcut." not in k}
    with pytest.raises(MergerError, match=r"resnet20: widths in 'P_stem' do not agree"):
        detect_family(shapes_of(state))


def test_bn_named_resnets_without_projections_stay_torchvisions():
    """Without any projection shortcut, bn-named basic blocks read as torchvision's
    (resnet18), as before the CIFAR code's names were accepted: not ambiguous."""
    torch.manual_seed(0)
    ref = _RefResNet([2], [8], bottleneck=False, stem=3)
    state = _randomize(ref)
    assert not any("downsample" in k for k in state)
    assert detect_family(shapes_of(state)) == "resnet18"
