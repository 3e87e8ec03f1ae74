"""Collect both models' hidden activations per permutation group, for activation matching.

For each group we hook one place in the network where exactly that group's units appear
as features: preferably the input of a layer that consumes them (a Linear's last axis or
a Conv's channel axis — post-nonlinearity, as Git Re-Basin matches), else the output of
the layer that produces them. Both models see the same batches; the features stream into
the matching statistics batch by batch, so memory stays at one batch of activations.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from core.alignment.activation_matching import ActivationStats
from core.alignment.spec import Perms
from core.architectures import Architecture
from core.data import Dataset
from core.data.fit import check_fits, forward_errors
from core.errors import MergerError
from core.jobs import Progress, run_cancellable

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _features(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """(samples, units) view of a layer's input or output: channels for convs, last axis else."""
    if isinstance(module, nn.Linear) or x.dim() == 2:
        return x.reshape(-1, x.shape[-1])
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def hook_points(arch: Architecture, model: nn.Module) -> dict[str, tuple[str, str]]:
    """Group → (module name, "input" | "output") where its units are features."""
    modules = dict(model.named_modules())
    points: dict[str, tuple[str, str]] = {}
    spec = arch.spec
    for group, axes in spec.groups.items():
        size = spec.sizes[group]
        choice = None
        for tensor, axis in axes:
            owner = tensor.rsplit(".", 1)[0]
            module = modules.get(owner)
            if not isinstance(module, _LAYERS) or not tensor.endswith(".weight"):
                continue
            fan_in = module.in_features if isinstance(module, nn.Linear) else module.in_channels
            if axis == 1 and fan_in == size and spec.block(tensor, axis) == 1:
                choice = (owner, "input")
                break
            if axis == 0 and choice is None:
                choice = (owner, "output")
        if choice is None:
            raise MergerError(
                f"cannot find where the units of permutation group '{group}' appear",
                hint="use weight matching for this architecture",
            )
        points[group] = choice
    return points


class _Recorder:
    """Forward hooks that keep the current batch's features per group."""

    def __init__(self, model: nn.Module, points: Mapping[str, tuple[str, str]]) -> None:
        modules = dict(model.named_modules())
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for group, (name, where) in points.items():
            module = modules[name]
            if where == "input":
                hook = self._pre(group, module)
                self._handles.append(module.register_forward_pre_hook(hook))
            else:
                hook = self._post(group, module)
                self._handles.append(module.register_forward_hook(hook))

    def _pre(self, group: str, module: nn.Module):
        def hook(_mod, args):
            self.features[group] = _features(args[0].detach(), module)

        return hook

    def _post(self, group: str, module: nn.Module):
        def hook(_mod, _args, output):
            self.features[group] = _features(output.detach(), module)

        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def match_by_activations(
    arch: Architecture,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    data: Dataset,
    *,
    metric: str = "correlation",
    batches: int = 20,
    batch_size: int = 128,
    solver: str = "auto",
    progress: Progress | None = None,
    notes: list[str] | None = None,
) -> Perms:
    """Permutations of B's units maximising activation similarity with A, per group.

    What the data could not tell apart (units that never vary, fewer samples than units)
    is appended to `notes`; data that makes no unit of a group vary is an error."""
    check_fits(data, arch.input_shape)
    if len(data) < 2:
        raise MergerError(
            f"activation matching compares units across examples, and the data has {len(data)}",
            hint="give a few hundred examples or more (the built-in digits set has 1797)",
        )
    model_a, model_b = arch.build(dict(state_a)).eval(), arch.build(dict(state_b)).eval()
    points = hook_points(arch, model_a)
    rec_a, rec_b = _Recorder(model_a, points), _Recorder(model_b, points)
    stats = {g: ActivationStats(arch.spec.sizes[g], metric=metric) for g in points}
    n_batches = min(batches, -(-len(data) // batch_size))
    params = sum(t.numel() for t in state_a.values())
    steps = _StepCosts(n_batches, batch_size, params, [st.units for st in stats.values()])
    try:
        with torch.no_grad():
            for i, (x, _) in enumerate(data.batches(batch_size, limit=batches)):
                if progress is not None:
                    progress.update(
                        steps.before_batch(i),
                        steps.total,
                        f"activations: batch {i + 1} of {n_batches}",
                    )
                with forward_errors(data):
                    model_a(x)
                    model_b(x)
                for group, st in stats.items():
                    st.update(rec_a.features[group], rec_b.features[group])
    finally:
        rec_a.close()
        rec_b.close()
    for group, st in stats.items():
        _check_spread(group, st, notes if notes is not None else [])
    perms = {}
    for k, (group, st) in enumerate(stats.items()):
        if progress is not None:
            progress.update(
                steps.before_solve(k),
                steps.total,
                f"matching units: group {k + 1} of {len(stats)} ({st.units} units)",
            )
        # a hard assignment can take tens of seconds in scipy: Cancel must not wait for it
        perms[group] = run_cancellable(lambda st=st: st.solve(solver=solver), progress)
    return perms


# Rough machine speeds for weighing the steps on the progress bar (not for any decision):
# a forward pass's multiply-adds per second, and an n×n assignment's n³ "operations" per
# second (scipy took 30-55 s at n = 4096 on a laptop's CPU; the auction is often faster).
_FORWARD_FLOPS_PER_S = 2e10
_SOLVE_OPS_PER_S = 2e9


class _StepCosts:
    """Where each step starts on the bar, weighed by its estimated time: a wide group's
    assignment takes tens of seconds, a batch a fraction of one. As equal steps, the bar
    read 90% (and "8 s left") through minutes of solving."""

    def __init__(self, batches: int, batch_size: int, params: int, units: list[int]) -> None:
        batch = 4.0 * batch_size * params / _FORWARD_FLOPS_PER_S  # two models, multiply-add
        self._batch = max(batch, 1e-6)
        self._solves = [max(float(n) ** 3 / _SOLVE_OPS_PER_S, 1e-6) for n in units]
        self._collect = batches * self._batch
        self.total = self._collect + sum(self._solves)

    def before_batch(self, i: int) -> float:
        return i * self._batch

    def before_solve(self, k: int) -> float:
        return self._collect + sum(self._solves[:k])


def _check_spread(group: str, st: ActivationStats, notes: list[str]) -> None:
    """Refuse a group the data leaves flat in either model; note what it leaves unclear."""
    dead_a, dead_b = st.constant_units()
    if max(dead_a, dead_b) == st.units:
        model = "A" if dead_a == st.units else "B"
        raise MergerError(
            f"no unit of permutation group '{group}' varies over the data in model {model}: "
            "activation matching has nothing to compare",
            hint="use data like the models' training data, or weight matching (no data needed)",
        )
    if dead_a or dead_b:
        notes.append(
            f"group {group}: {dead_a} of A's and {dead_b} of B's {st.units} units never vary "
            "over the data (dead or constant); they are paired arbitrarily"
        )
    if st.count < st.units:
        notes.append(
            f"group {group}: {st.count} samples for {st.units} units; with fewer samples than "
            "units many units look alike (more data tells them apart)"
        )
