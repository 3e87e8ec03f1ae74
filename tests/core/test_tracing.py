"""fx-traced specs: invariance for traced modules, agreement with hand-written family specs,
and honest refusals for ops the tracer does not understand."""

from __future__ import annotations

import pytest
import torch
from module_states import randomized_state
from torch import nn

from core.alignment.tracing import trace_spec
from core.architectures import resolve_architecture
from core.errors import MergerError


def _traced_self_test(net: nn.Module, x: torch.Tensor):
    state = randomized_state(net)
    spec = trace_spec(net, x).infer_sizes(state)
    return spec, spec.self_test(net, state, x)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.gn = nn.GroupNorm(1, 5)
        self.fc1 = nn.Linear(5 * 2 * 2, 7)
        self.ln = nn.LayerNorm(7)
        self.fc2 = nn.Linear(7, 4)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.gelu(self.gn(self.conv2(x)))
        x = nn.functional.adaptive_avg_pool2d(x, 2)
        x = x.view(x.size(0), -1)
        x = torch.tanh(self.ln(self.fc1(x)))
        return nn.functional.log_softmax(self.fc2(x), dim=1)


class ResidualBlock(nn.Module):
    def __init__(self, c=6):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.a = nn.Conv2d(c, 4, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, c, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.bn_b(self.b(torch.relu(self.bn_a(self.a(x)))))
        x = torch.relu(x + y)
        return self.head(x.mean((2, 3)))


def test_traced_mlp_matches_the_hand_spec_and_is_invariant():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 5), nn.SiLU(), nn.Linear(5, 3))
    spec, diff = _traced_self_test(net, torch.randn(4, 8))
    assert spec.groups == {
        "P_0": [("0.weight", 0), ("0.bias", 0), ("2.weight", 1)],
        "P_2": [("2.weight", 0), ("2.bias", 0), ("4.weight", 1)],
    }
    assert spec.activations == {"P_0": ["1"], "P_2": ["3"]}
    assert diff < 1e-10


def test_traced_cnn_with_norms_and_flatten_blocks():
    torch.manual_seed(0)
    spec, diff = _traced_self_test(SmallCNN(), torch.randn(2, 3, 8, 8))
    assert diff < 1e-10
    assert set(spec.groups) == {"P_conv1", "P_conv2", "P_fc1"}
    assert ("bn1.running_var", 0) in spec.groups["P_conv1"]
    assert ("gn.weight", 0) in spec.groups["P_conv2"]
    assert spec.blocks == {("fc1.weight", 1): 4}
    assert ("ln.bias", 0) in spec.groups["P_fc1"]


def test_residual_add_joins_the_stream():
    torch.manual_seed(0)
    spec, diff = _traced_self_test(ResidualBlock(), torch.randn(2, 3, 6, 6))
    assert diff < 1e-10
    stream = spec.groups["P_stem"]
    assert ("b.weight", 0) in stream and ("bn_b.running_mean", 0) in stream
    assert ("head.weight", 1) in stream and ("a.weight", 1) in stream
    assert set(spec.groups) == {"P_stem", "P_a"}


def test_squeeze_after_global_pool_keeps_channels():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 5, 3)
            self.pool = nn.AdaptiveMaxPool2d(1)
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            return self.fc(self.pool(nn.functional.silu(self.conv(x))).squeeze(-1).squeeze(-1))

    spec, diff = _traced_self_test(Net(), torch.randn(2, 2, 5, 5))
    assert diff < 1e-10 and spec.blocks == {}
    assert spec.groups == {"P_conv": [("conv.weight", 0), ("conv.bias", 0), ("fc.weight", 1)]}


def test_first_input_and_last_output_are_not_permuted():
    spec = trace_spec(nn.Linear(4, 3), torch.randn(2, 4))
    assert spec.groups == {}


def _canonical(spec):
    return sorted(sorted(axes) for axes in spec.groups.values())


def test_traced_specs_of_built_families_equal_their_hand_specs():
    torch.manual_seed(0)
    from test_architectures_resnet import _randomize, _ref  # the reference models

    for case in ("resnet18", "resnet50", "resnet20-ln"):
        state = _randomize(_ref(case))
        arch = resolve_architecture(None, state)
        traced = trace_spec(arch.build(state), torch.randn(1, 3, 32, 32))
        assert _canonical(traced) == _canonical(arch.spec), case


class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.cat([self.a(x), self.b(x)], dim=1))


class _Transpose(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x):
        return self.a(x).t()


class _DirectParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.a = nn.Linear(4, 2)

    def forward(self, x):
        return self.a(x * self.scale)


class _DirectBuffer(_DirectParam):
    def __init__(self):
        super().__init__()
        del self.scale
        self.register_buffer("scale", torch.ones(4))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.a(x)
        return -self.a(x)


class _Regroup(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 1)
        self.b = nn.Linear(2 * 2 * 9, 3)

    def forward(self, x):
        return self.b(self.a(x).view(x.size(0), 2, -1).flatten(1))


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x)[0]


@pytest.mark.parametrize(
    ("net", "x", "fragments"),
    [
        (_Cat(), torch.randn(2, 4), ["function cat", "node 'cat'"]),
        (_Transpose(), torch.randn(2, 4), ["method .t()", "node 't'"]),
        (_DirectParam(), torch.randn(2, 4), ["parameter 'scale'", "used directly"]),
        (_DirectBuffer(), torch.randn(2, 4), ["buffer 'scale'", "used directly"]),
        (_Branchy(), torch.randn(2, 4), ["torch.fx cannot trace _Branchy"]),
        (_Regroup(), torch.randn(2, 1, 3, 3), ["reshape from [2, 4, 3, 3] to [2, 2, 18]"]),
        (_Attention(), torch.randn(2, 3, 4), ["MultiheadAttention 'attn'", "not supported"]),
        (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 2, 1)),
         torch.randn(1, 4, 5, 5), ["Conv2d '0'", "grouped convolution"]),
        (nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1)),
         torch.randn(1, 3, 5, 5), ["GroupNorm '1'", "mix units"]),
    ],
)  # fmt: skip
def test_unsupported_ops_are_refused_by_name(net, x, fragments):
    with pytest.raises(MergerError) as info:
        trace_spec(net, x)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_depthwise_conv_shares_its_input_permutation():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4, padding=1), nn.Conv2d(4, 2, 1)
    )
    spec, diff = _traced_self_test(net, torch.randn(2, 3, 5, 5))
    assert diff < 1e-10
    assert ("2.weight", 0) in spec.groups["P_0"] and ("3.weight", 1) in spec.groups["P_0"]


class _Between(nn.Module):
    """Linear -> op -> Linear: the op sits on one permuted feature axis."""

    def __init__(self, op):
        super().__init__()
        self.a, self.b, self.op = nn.Linear(4, 6), nn.Linear(6, 3), op

    def forward(self, x):
        return self.b(self.op(self.a(x)))


@pytest.mark.parametrize(
    "op",
    [
        lambda h: torch.clamp(h, min=-0.5, max=0.5),
        lambda h: h.clamp(min=0.0),
        lambda h: h.pow(2),
        lambda h: h**2 + torch.sqrt(h.abs() + 1),
        lambda h: torch.rsqrt(h.square() + 1),
        lambda h: h.detach().clone().contiguous(),
        lambda h: torch.maximum(h, torch.sin(h)) / 2,
        lambda h: nn.functional.selu(h) + nn.functional.hardsigmoid(h),
        lambda h: torch.log1p(h.exp()),
    ],
)
def test_elementwise_ops_pass_their_permutation_through(op):
    """Any elementwise function of one feature axis (or of two with the same axis) keeps
    the network's function under a permutation of that axis."""
    torch.manual_seed(0)
    spec, diff = _traced_self_test(_Between(op), torch.randn(5, 4))
    assert diff < 1e-10
    assert set(spec.groups) == {"P_a"}


class _Preprocessed(nn.Module):
    """Ops the tracer does not model, but on the raw input only (never permuted)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 5, 3, padding=1), nn.Linear(5 * 8, 3)

    def forward(self, x):
        x = (x * 4).round()[:, None].unsqueeze(-1).squeeze(-1)  # (N, 8) -> (N, 1, 8)
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_any_op_on_the_raw_input_is_preprocessing():
    """round, indexing and unsqueeze act before the first layer: the spec is the conv's
    group alone, and it keeps the network's function."""
    torch.manual_seed(0)
    spec, diff = _traced_self_test(_Preprocessed(), torch.randn(4, 8))
    assert diff < 1e-10
    assert set(spec.groups) == {"P_conv"}
