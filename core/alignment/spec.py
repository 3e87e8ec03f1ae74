"""Permutation specs: which tensor axes share one permutation of hidden units.

A hidden layer's units can be reordered without changing the network's function, as
long as every tensor axis indexing those units (the producing layer's output axis, its
bias and norm parameters and statistics, the consuming layer's input axis) is permuted
the same way. A `PermutationSpec` lists those axes per permutation group; it is data,
as in Git Re-Basin, so hand-written specs and fx-traced specs look the same.

Convention: a permutation `p` is a LongTensor with `new = old.index_select(axis, p)`,
i.e. unit `p[i]` of the old tensor moves to position `i`.

Blocked axes: where a conv's C channels are flattened into a linear layer's C·S inputs
(channel-major, as `flatten` lays out (C, H, W)), that input axis is listed in the group
like any other and `blocks[(tensor, axis)] = S` says each unit owns S consecutive
entries. `tensor.movedim(axis, 0).reshape(n, -1)` then still gives one row per unit,
which is all a cost computation needs; `apply` expands the permutation to the blocks.

Which tensors are statistics (BatchNorm running mean/var) is told by `is_statistic`:
they are permuted with their channels but carry no weight in matching costs. Integer
buffers (`num_batches_tracked`) never appear in a spec.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from core.errors import MergerError

Perms = dict[str, torch.Tensor]
ModelSource = nn.Module | Callable[[Mapping[str, torch.Tensor]], nn.Module]

_STATISTIC_SUFFIXES = ("running_mean", "running_var")


def is_statistic(tensor: str) -> bool:
    """True for BatchNorm running statistics: permuted, but not part of a matching cost."""
    return tensor.rsplit(".", 1)[-1] in _STATISTIC_SUFFIXES


@dataclass
class PermutationSpec:
    """Permutation groups: name → list of (tensor name, axis), plus each group's size.

    `blocks` maps (tensor, axis) to the number of consecutive entries each unit owns on
    that axis (default 1). `activations` optionally maps a group to the names of modules
    whose output carries the group's units on dim 1 (after the nonlinearity), for
    activation matching; built-in families fill it, traced specs may leave it empty.
    """

    groups: dict[str, list[tuple[str, int]]]
    sizes: dict[str, int] = field(default_factory=dict)
    blocks: dict[tuple[str, int], int] = field(default_factory=dict)
    activations: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_tensor: dict[str, list[tuple[int, str]]] = {}
        for group, axes in self.groups.items():
            for tensor, axis in axes:
                self._by_tensor.setdefault(tensor, []).append((axis, group))

    def renamed(self, rename: Callable[[str], str]) -> PermutationSpec:
        """The same spec over tensors renamed by `rename` (module names in `activations`
        are the built model's and stay as they are)."""
        return PermutationSpec(
            {g: [(rename(t), a) for t, a in axes] for g, axes in self.groups.items()},
            dict(self.sizes),
            {(rename(t), a): b for (t, a), b in self.blocks.items()},
            {g: list(m) for g, m in self.activations.items()},
        )

    def axes_of(self, tensor: str) -> list[tuple[int, str]]:
        """The (axis, group) pairs that permute `tensor`; empty if it is never permuted."""
        return self._by_tensor.get(tensor, [])

    @property
    def tensors(self) -> list[str]:
        return list(self._by_tensor)

    def infer_sizes(self, state: Mapping[str, torch.Tensor]) -> PermutationSpec:
        """Fill `sizes` from the tensors' shapes and check every axis of a group agrees."""
        for group, axes in self.groups.items():
            seen: set[int] = set()
            for tensor, axis in axes:
                if tensor not in state:
                    raise MergerError(
                        f"the permutation spec names tensor '{tensor}' that the model lacks",
                        hint="pick the right architecture for this checkpoint",
                    )
                value = state[tensor]
                if not (value.is_floating_point() or value.is_complex()):
                    raise MergerError(
                        f"permutation group '{group}' lists the integer tensor '{tensor}'",
                        tensor=tensor,
                        hint="integer buffers such as num_batches_tracked are never permuted",
                    )
                if axis >= value.dim():
                    raise MergerError(
                        f"permutation group '{group}' names axis {axis} of a "
                        f"{value.dim()}-D tensor",
                        tensor=tensor,
                        hint="the spec does not fit this checkpoint",
                    )
                length = int(value.shape[axis])
                block = self.block(tensor, axis)
                if length % block:
                    raise MergerError(
                        f"axis {axis} has {length} entries, not a multiple of the block "
                        f"size {block} of group '{group}'",
                        tensor=tensor,
                        hint="the spec does not fit this checkpoint",
                    )
                seen.add(length // block)
            if len(seen) != 1:
                raise MergerError(
                    f"permutation group '{group}' spans axes of different sizes {sorted(seen)}",
                    hint="the spec does not fit this checkpoint",
                )
            self.sizes[group] = seen.pop()
        return self

    def block(self, tensor: str, axis: int) -> int:
        """How many consecutive entries of `tensor` along `axis` belong to one unit."""
        return self.blocks.get((tensor, axis), 1)

    def identity(self) -> Perms:
        return {g: torch.arange(n) for g, n in self.sizes.items()}

    def random(self, seed: int = 0) -> Perms:
        gen = torch.Generator().manual_seed(seed)
        return {g: torch.randperm(n, generator=gen) for g, n in self.sizes.items()}

    def apply(self, state: Mapping[str, torch.Tensor], perms: Mapping[str, torch.Tensor]) -> dict:
        """Return a new state dict with every listed axis permuted; other tensors as they are."""
        out = dict(state)
        for tensor, axes in self._by_tensor.items():
            if tensor not in state:
                continue
            value = state[tensor]
            for axis, group in axes:
                if group in perms:
                    index = expand_blocks(perms[group], self.block(tensor, axis))
                    value = value.index_select(axis, index.to(value.device))
            out[tensor] = value
        return out

    def self_test(
        self,
        model: ModelSource,
        state: Mapping[str, torch.Tensor],
        example_input: torch.Tensor,
        seed: int = 0,
        atol: float | None = None,
        *,
        dtype: torch.dtype | None = torch.float64,
    ) -> float:
        """Check that random permutations leave the network's outputs unchanged.

        `model` is a module (copied, then loaded with `state`) or a function building a
        loaded module from a state dict. Runs in eval mode, in float64 by default so
        that reordered sums agree to ~1e-12 and a real fault stands out. Returns the
        largest absolute output difference; raises MergerError naming the first group
        that alone breaks invariance. `atol` defaults to 1e-6 (float64) or 1e-3
        (otherwise) times max(1, largest |output|).
        """
        if not self.sizes:
            self.infer_sizes(state)
        net = _instantiate(model, state)
        if dtype is not None:
            net = net.to(dtype)
            if example_input.is_floating_point():
                example_input = example_input.to(dtype)
        reference = _outputs(net, state, example_input)
        scale = max(1.0, float(reference.abs().max())) if reference.numel() else 1.0
        if atol is None:
            atol = (1e-6 if dtype == torch.float64 else 1e-3) * scale
        perms = _non_identity(self.random(seed), seed)
        worst = _max_diff(reference, _outputs(net, self.apply(state, perms), example_input))
        if worst <= atol:
            return worst
        for group, perm in perms.items():
            diff = _max_diff(
                reference, _outputs(net, self.apply(state, {group: perm}), example_input)
            )
            if diff > atol:
                axes = ", ".join(f"{t}[{a}]" for t, a in self.groups[group][:6])
                more = " ..." if len(self.groups[group]) > 6 else ""
                raise MergerError(
                    f"permuting group '{group}' ({axes}{more}) changes the outputs by "
                    f"{diff:.3g} (tolerance {atol:.3g}), so the spec is wrong for this model",
                    hint="an axis is missing from this group or belongs to another; "
                    "check the architecture choice",
                )
        raise MergerError(
            f"random permutations of all groups together change the outputs by {worst:.3g} "
            f"(tolerance {atol:.3g}), though each group alone does not",
            hint="two groups share an axis that should be one group; check the architecture",
        )


def _instantiate(model: ModelSource, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """A private, loaded copy of the model, so the test never touches the caller's module."""
    if isinstance(model, nn.Module):
        net = copy.deepcopy(model)
        net.load_state_dict(dict(state), strict=True)
    else:
        net = model(state)
    return net.eval()


@torch.no_grad()
def _outputs(net: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Load `state` into `net` and return all its output tensors, flattened into one."""
    net.load_state_dict(dict(state), strict=True)
    out = net(x)
    parts = out if isinstance(out, list | tuple) else [out]
    if isinstance(out, Mapping):
        parts = list(out.values())
    return torch.cat([p.detach().reshape(-1).double() for p in parts if torch.is_tensor(p)])


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def _non_identity(perms: Perms, seed: int) -> Perms:
    """Random permutations where none is the identity (a size-2 group is one half the time)."""
    out = {}
    for group, perm in perms.items():
        if len(perm) > 1 and torch.equal(perm, torch.arange(len(perm))):
            perm = perm.roll(1 + seed % (len(perm) - 1))
        out[group] = perm
    return out


def expand_blocks(perm: torch.Tensor, block: int) -> torch.Tensor:
    """The index over an axis of n·block entries that moves whole blocks as `perm` moves units."""
    if block == 1:
        return perm
    offsets = torch.arange(block, device=perm.device)
    return (perm[:, None] * block + offsets[None, :]).reshape(-1)


def invert(perm: torch.Tensor) -> torch.Tensor:
    """The permutation that undoes `perm` under the index_select convention."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm), device=perm.device)
    return inv
