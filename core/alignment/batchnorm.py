"""Re-estimate BatchNorm running statistics after permuting or interpolating weights.

Averaging two networks' weights changes every layer's activation statistics, while the
running mean/var are still the (averaged) old ones; the interpolated net then suffers a
"variance collapse" (Jordan et al., REPAIR). Re-estimating the statistics on real data
fixes most of it. We reset the statistics and use `momentum=None`, which makes PyTorch
keep a cumulative average over the batches seen: the result is the data's moments, not
an exponential blend with the stale values.
"""

from __future__ import annotations

import torch
from torch import nn

from core.data import Dataset

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]


@torch.no_grad()
def reset_bn_stats(
    model: nn.Module,
    dataset: Dataset,
    batches: int | None = 100,
    batch_size: int = 128,
    device: str | None = None,
) -> int:
    """Recompute running mean/var of every BatchNorm from up to `batches` batches.

    Returns how many BatchNorm layers were updated (0 if the model has none, in which
    case nothing runs). The model ends in eval mode; weights are not touched.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    saved = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    try:
        for count, (x, _) in enumerate(dataset.batches(batch_size, limit=batches)):
            if len(x) < 2 and count > 0:
                break  # a last batch of one has no variance (BatchNorm1d refuses it)
            model(x.to(device))
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
        model.eval()
    return len(layers)
