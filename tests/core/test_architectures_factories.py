"""Random-init factories: they write real checkpoints' shapes (torchvision parameter counts)."""

from __future__ import annotations

import pytest
import torch

from core.architectures import resolve_architecture
from core.architectures.factories import mlp_state, resnet20_state, resnet_state, vgg_state


def _params(state: dict[str, torch.Tensor]) -> int:
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.numel() for k, v in state.items() if not k.endswith(skip))


@pytest.mark.parametrize(
    ("depth", "family", "count"),
    # torchvision's published parameter counts for the ImageNet models
    [(18, "resnet18", 11_689_512), (34, "resnet18", 21_797_672), (50, "resnet50", 25_557_032)],
)
def test_torchvision_resnets_have_torchvisions_parameter_counts(depth, family, count):
    """Each depth is named as such, and under its alias resolves to its family's blocks."""
    state = resnet_state(depth)
    assert _params(state) == count
    assert resolve_architecture(None, state).name == f"resnet{depth}"
    assert resolve_architecture(f"resnet{depth}", state).spec.groups.keys() == (
        resolve_architecture(family, state).spec.groups.keys()
    )
    # bottlenecks widen layer1 to 256 channels, so only ResNet-50 projects there
    assert ("layer1.0.downsample.0.weight" in state) == (depth == 50)


@pytest.mark.slow
def test_vgg11_bn_has_the_right_number_of_parameters():
    # torchvision vgg11_bn: 132,868,840 parameters with 7×7 pooling and 4096-wide classifier
    state = vgg_state(batchnorm=True, hidden=(4096, 4096), num_classes=1000, side=7)
    assert _params(state) == 132_868_840
    assert resolve_architecture(None, state).input_shape == (3, 224, 224)


def test_resnet20_width_multiplier_and_norms():
    ln = resolve_architecture(None, resnet20_state(4))
    assert ln.spec.sizes["P_stem"] == 64 and ln.spec.sizes["P_layer3"] == 256
    bn_state = resnet20_state(1, norm="batchnorm", seed=1)
    assert "norm1.running_mean" in bn_state
    assert len([k for k in bn_state if k.endswith("conv1.weight")]) == 1 + 9


def test_seeds_differ_and_repeat():
    assert torch.equal(mlp_state([4, 3, 2], seed=5)["layers.0.weight"],
                       mlp_state([4, 3, 2], seed=5)["layers.0.weight"])  # fmt: skip
    assert not torch.equal(mlp_state([4, 3, 2], seed=5)["layers.0.weight"],
                           mlp_state([4, 3, 2], seed=6)["layers.0.weight"])  # fmt: skip
    assert list(mlp_state([64, 32, 32, 10])) == [
        f"layers.{i}.{leaf}" for i in (0, 2, 4) for leaf in ("weight", "bias")
    ]
