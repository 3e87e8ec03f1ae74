"""State dicts of small nn.Modules with non-trivial norm statistics, for invariance tests.

A freshly built BatchNorm has weight 1, mean 0 and var 1, which hides mistakes in how its
statistics are permuted; these values are random (and positive where they must be).
"""

from __future__ import annotations

import torch
from torch import nn


def randomized_state(net: nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    for name, value in net.state_dict().items():
        if name.endswith("running_var") or (value.dim() == 1 and name.endswith("weight")):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
        elif name.endswith("running_mean"):
            value.copy_(torch.randn(value.shape, generator=gen))
    return dict(net.eval().state_dict())
