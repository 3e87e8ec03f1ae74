"""BatchNorm re-estimation: the running statistics become the data's moments."""

from __future__ import annotations

import torch
from torch import nn

from core.alignment.batchnorm import reset_bn_stats
from core.data import Dataset


def _data(n: int = 64) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=gen) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([5, -1, 0])
    return Dataset(x, torch.zeros(n, dtype=torch.long), "t")


def test_one_layer_net_gets_the_datas_mean_and_variance():
    data = _data()
    linear = nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
        linear.bias.copy_(torch.tensor([0.5, -2.0]))
    bn = nn.BatchNorm1d(2)
    bn.running_mean.fill_(123.0)  # stale values that must be forgotten, not blended
    bn.running_var.fill_(77.0)
    net = nn.Sequential(linear, bn)
    assert reset_bn_stats(net, data, batches=None, batch_size=len(data)) == 1
    h = torch.stack([data.x[:, 0] + 0.5, data.x[:, 0] + data.x[:, 1] - 2.0], 1)
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var(0, unbiased=True), atol=1e-4)
    assert not net.training and bn.momentum == 0.1


def test_several_batches_average_cumulatively():
    data = _data(64)
    bn = nn.BatchNorm1d(3)
    reset_bn_stats(bn, data, batches=4, batch_size=16)
    means = torch.stack([x.mean(0) for x, _ in data.batches(16)])
    variances = torch.stack([x.var(0) for x, _ in data.batches(16)])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-4)


def test_batch_limit_uses_only_the_first_batches():
    data = _data(64)
    bn = nn.BatchNorm1d(3)
    reset_bn_stats(bn, data, batches=1, batch_size=16)
    assert torch.allclose(bn.running_mean, data.x[:16].mean(0), atol=1e-5)


def test_conv_batchnorm_and_trailing_single_example():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(33, 2, 4, 4, generator=gen) + 3.0
    data = Dataset(x, torch.zeros(33, dtype=torch.long), "img")
    net = nn.Sequential(nn.Identity(), nn.BatchNorm2d(2))
    assert reset_bn_stats(net, data, batches=None, batch_size=32) == 1
    assert torch.allclose(net[1].running_mean, x[:32].mean((0, 2, 3)), atol=1e-5)


def test_model_without_batchnorm_is_left_alone():
    net = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert reset_bn_stats(net, _data()) == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
