"""Defining properties of specs across families: inverses undo permutations exactly,
every hidden unit is covered, hook names exist, and any MLP naming/order is recovered."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.alignment.spec import invert
from core.architectures import resolve_architecture
from core.architectures.factories import mlp_state, resnet20_state, resnet_state, vgg_state

SMALL = {
    "mlp": lambda: mlp_state([6, 5, 4, 3]),
    "vgg": lambda: vgg_state([4, "M", 6, "M"], batchnorm=True, hidden=(5,)),
    "resnet20": lambda: resnet20_state(1, norm="batchnorm", blocks_per_stage=1),
    "resnet18": lambda: resnet_state(18, width=4, num_classes=3, cifar_stem=True),
    "resnet50": lambda: resnet_state(50, width=4, num_classes=3, cifar_stem=True),
}


def test_inverse_permutations_restore_every_tensor_exactly():
    for name, make in SMALL.items():
        state = make()
        spec = resolve_architecture(name, state).spec
        perms = spec.random(seed=3)
        back = spec.apply(spec.apply(state, perms), {g: invert(p) for g, p in perms.items()})
        assert all(torch.equal(back[k], v) for k, v in state.items()), name


def test_activation_hooks_name_modules_that_carry_the_groups_units():
    for name, make in SMALL.items():
        state = make()
        arch = resolve_architecture(name, state)
        net = arch.build(state)
        modules = dict(net.named_modules())
        seen: dict[str, tuple[int, ...]] = {}
        hooks = [
            modules[m].register_forward_hook(
                lambda _m, _i, out, m=m, seen=seen: seen.__setitem__(m, tuple(out.shape))
            )
            for names in arch.spec.activations.values()
            for m in names
        ]
        net(arch.example_input())
        for handle in hooks:
            handle.remove()
        for group, names in arch.spec.activations.items():
            for m in names:
                assert seen[m][1] == arch.spec.sizes[group], (name, group, m)


def test_only_output_rows_and_input_columns_stay_unpermuted():
    """Every hidden axis is in some group: only the first layer's inputs and the last
    layer's outputs (and integer counters) are left alone."""
    state = resnet_state(18, width=4, num_classes=3)
    spec = resolve_architecture(None, state).spec
    covered = {(t, a) for axes in spec.groups.values() for t, a in axes}
    free = {
        (name, axis)
        for name, value in state.items()
        for axis in range(min(value.dim(), 2))
        if (name, axis) not in covered and value.is_floating_point()
    }
    assert free == {("conv1.weight", 1), ("fc.weight", 0), ("fc.bias", 0)}


@settings(max_examples=20, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=6),
    style=st.sampled_from(["layers.", "net.", "", "fc"]),
    seed=st.integers(0, 1000),
)
def test_any_mlp_naming_and_key_order_is_recovered(widths, style, seed):
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        name = f"fc{i + 1}" if style == "fc" else f"{style}{2 * i}"
        state[f"{name}.weight"] = torch.randn(b, a, generator=gen)
        state[f"{name}.bias"] = torch.randn(b, generator=gen)
    keys = list(state)
    order = torch.randperm(len(keys), generator=gen).tolist()
    shuffled = {keys[i]: state[keys[i]] for i in order}
    arch = resolve_architecture("mlp", shuffled)
    assert arch.input_shape == (widths[0],)
    x = torch.randn(3, widths[0], generator=gen)
    reference = x
    for i in range(len(widths) - 1):
        name = keys[2 * i].rsplit(".", 1)[0]
        reference = reference @ state[f"{name}.weight"].T + state[f"{name}.bias"]
        reference = torch.relu(reference) if i < len(widths) - 2 else reference
    assert torch.allclose(arch.build(shuffled)(x), reference, atol=1e-5)
    assert arch.spec.self_test(arch.build, shuffled, x) < 1e-9
