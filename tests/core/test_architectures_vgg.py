"""The VGG family: torchvision-style names, pools read from index gaps, flatten blocks."""

from __future__ import annotations

import pytest
import torch
from module_states import randomized_state
from torch import nn

from core.architectures import resolve_architecture
from core.errors import MergerError


class _RefVGG(nn.Module):
    """torchvision's VGG layout, written out: features, adaptive avg-pool, classifier."""

    def __init__(self, cfg, bn, side, hidden=20, classes=10):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(channels, v, 3, padding=1))
            layers += [nn.BatchNorm2d(v)] if bn else []
            layers.append(nn.ReLU())
            channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((side, side))
        self.classifier = nn.Sequential(
            nn.Linear(channels * side * side, hidden), nn.ReLU(), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(),
            nn.Linear(hidden, classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("side", [1, 2])
def test_vgg_is_detected_faithful_and_invariant(bn, side):
    torch.manual_seed(0)
    ref = _RefVGG([8, "M", 16, 16, "M", 12, "M"], bn, side)
    state = randomized_state(ref)
    arch = resolve_architecture(None, state)
    assert arch.name == "vgg"
    assert arch.input_shape == (3, 8 * side, 8 * side)
    net = arch.build(state)
    assert list(net.state_dict()) == list(state)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(net(x), ref(x), atol=1e-6)
    assert arch.spec.self_test(arch.build, state, x) < 1e-10
    last = "P_features.11" if bn else "P_features.8"
    assert arch.spec.block("classifier.0.weight", 1) == side * side
    assert ("classifier.0.weight", 1) in arch.spec.groups[last]
    assert arch.spec.sizes[last] == 12


def test_flatten_without_blocks_is_refused():
    """The blocked axis matters: without it 12 channels cannot own 48 inputs."""
    torch.manual_seed(0)
    state = randomized_state(_RefVGG([8, "M", 12, "M"], False, 2))
    arch = resolve_architecture("vgg", state)
    spec = arch.spec
    spec.blocks.clear()
    with pytest.raises(MergerError):
        spec.infer_sizes(state)


def test_a_conv_followed_by_unknown_layers_is_not_a_vgg():
    torch.manual_seed(0)
    state = randomized_state(_RefVGG([8, "M", 12, "M"], False, 1))
    state = {k.replace("features.3.", "features.6."): v for k, v in state.items()}
    with pytest.raises(MergerError, match="followed by 5 layers"):
        resolve_architecture("vgg", state)


def test_the_datas_image_size_tells_whether_the_last_conv_pools():
    """The weights cannot show a pool after the last conv; images of the data's size can:
    the layout that brings the classifier its s×s exactly is run as the reference is.
    A named option is kept, and a map the adaptive pool must stretch is warned about."""
    torch.manual_seed(0)
    ref = _RefVGG([8, "M", 16], bn=True, side=2)  # no pool after the last conv
    state = randomized_state(ref)
    x = torch.randn(3, 3, 4, 4)  # 4 -> 2 after the one pool: the classifier's 2×2
    arch = resolve_architecture(None, state, input_shape=(3, 4, 4))
    assert arch.name == "vgg:no-last-pool"
    assert any("only without a max-pool after the last conv" in n for n in arch.notes)
    assert torch.allclose(arch.build(state)(x), ref(x), atol=1e-6)
    assert arch.spec.self_test(arch.build, state, x) < 1e-10
    pooled = resolve_architecture("vgg:last-pool", state, input_shape=(3, 4, 4))
    assert pooled.name == "vgg"
    assert any("the adaptive pool repeats values" in n for n in pooled.notes)
    assert not torch.allclose(pooled.build(state)(x), ref(x), atol=1e-3)
    # torchvision's layout on its own image size: the default, with nothing to say
    torchvision = resolve_architecture(None, state, input_shape=(3, 8, 8))
    assert torchvision.name == "vgg" and len(torchvision.notes) == 1  # the detection note
