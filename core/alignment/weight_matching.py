"""Git Re-Basin weight matching: coordinate descent over permutation groups.

Find permutations π of model B's hidden units maximizing Σ_t ⟨A_t, π(B_t)⟩ (equivalently
minimizing ‖θ_A − π(θ_B)‖²). The objective is bilinear in the groups, so, as in the
official code, each step fixes all groups but one and solves a linear assignment for it;
groups are visited in a seeded random order, reshuffled every sweep, until a whole sweep
makes no progress.

Why it is faster than the straightforward loop (see benchmarks/weight_matching.py):

* Cost matrices are cached per group and updated incrementally. When a neighbouring
  group's permutation changes in k positions, the cost changes by a rank-k product, which
  costs k/n of a full recompute. Late sweeps change few positions.
* A group whose cost did not change since it was last solved is not solved again (its
  permutation is already optimal for that cost), so the final "no progress" sweep is free.
* Products run in float32 (as the official JAX code); cached costs stay float32 and are
  updated in place (a float64 cache doubled the memory traffic for no visible gain).
* The objective is tracked from each step's gain (summed in float64 from the float32
  costs, within ~1e-9 of a float64 recomputation) instead of being recomputed.
* Assignments go to the compiled auction (`auction_lap`), 6-27× faster than scipy on
  these costs, and each group's solve starts from its previous prices and permutation
  (`WarmAssignment`). Its answers are exact, so the path of the descent is the official
  one: same permutations, same objective (tests/core/test_weight_matching_reference.py).
* B is permuted by one gather per product, read in place or through a transposing view,
  into buffers reused across products; A's transposed rows likewise. Nothing is cached
  across products: new memory's page faults cost more than the copies on a small network.
  On the CPU, conv weights' gathers and transposes run as compiled loops
  (`copy_kernels`): torch moves a 3×3 kernel's 36-byte runs slowly, and these copies
  were a fifth of a ResNet's time.
* A group's fixed entries (tensors with no other permuted axis: biases, norm parameters,
  a first or last layer) are summed as one product of the entries side by side.

Tensors permuted on two axes by the same group (square skip weights) make that group's
cost quadratic; we linearize around the current permutation like the official code, but
accept the new permutation only if the true objective improves, so it never decreases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from core.alignment import copy_kernels
from core.alignment.solvers import NonFiniteScore, WarmAssignment
from core.alignment.spec import PermutationSpec, expand_blocks
from core.errors import MergerError
from core.jobs import Progress, run_cancellable

SKIPPED_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
# A group whose incremental update would redo more than this fraction of a full recompute's
# work (products weighted by size) is recomputed instead: the update gathers three times
# what a recompute gathers once.
_FULL_RECOMPUTE_FRACTION = 0.75
# B is gathered in place along an axis whose entries come in runs at least this long (a
# 3×3 kernel's 9 values); shorter runs (a Linear's columns) go through a transposing view.
_MIN_RUN = 4
# Groups at least this wide solve on a helper thread that Cancel can leave behind: scipy
# (the fallback where an auction would stall) can take seconds to minutes there, and
# cannot be interrupted. Smaller solves take milliseconds; a thread each would cost more.
_SLOW_SOLVE_SIZE = 1024
# Floating-point operations per slice of a long product between cancel checks: about a
# tenth of a second on a laptop's CPU, a small fraction of the product on a GPU.
_FLOPS_PER_SLICE = 2e10


@dataclass
class MatchResult:
    """Permutations to apply to model B, and how the objective evolved."""

    perms: dict[str, torch.Tensor]
    objective_history: list[float] = field(default_factory=list)  # after each sweep
    sweeps: int = 0
    initial_objective: float = 0.0
    converged: bool = False  # a sweep left every group as it was (not stopped by max_iter)


def cost_tensors(spec: PermutationSpec, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Tensors that enter the matching cost: permuted, floating point, not BN statistics."""
    return [
        t
        for t in spec.tensors
        if t in state and state[t].is_floating_point() and not t.endswith(SKIPPED_SUFFIXES)
    ]


def matching_objective(
    spec: PermutationSpec,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    perms: Mapping[str, torch.Tensor],
) -> float:
    """Σ_t ⟨A_t, π(B_t)⟩ over the cost tensors, in float64."""
    total = 0.0
    permuted = spec.apply({t: state_b[t] for t in cost_tensors(spec, state_b)}, perms)
    for t in cost_tensors(spec, state_b):
        total += float((state_a[t].double() * permuted[t].double()).sum())
    return total


def weight_matching(
    spec: PermutationSpec,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    *,
    max_iter: int = 100,
    seed: int = 0,
    init_perms: Mapping[str, torch.Tensor] | None = None,
    progress: Progress | None = None,
    solver: str = "auto",
    device: str = "cpu",
) -> MatchResult:
    """Permutations of B's units that align B to A (apply with `spec.apply(state_b, perms)`).

    Stops after `max_iter` sweeps or after the first sweep in which no group improved its
    score by more than a relative 1e-10 (the official code uses an absolute 1e-12, which
    float32 products cannot resolve). Raises `Cancelled` if `progress` is cancelled.
    """
    if not spec.sizes:
        spec.infer_sizes(state_a)
    _check_models(spec, state_a, state_b)
    dev = _resolve_device(device)
    perms = _initial_perms(spec, init_perms)
    problem = _Problem(spec, state_a, state_b, dev, check=progress.check if progress else None)
    groups = [g for g in spec.groups if spec.sizes.get(g, 0) > 0]
    gen = torch.Generator().manual_seed(seed)
    value = problem.objective(perms)  # checks for Cancel between tensors
    result = MatchResult(perms={}, initial_objective=value)
    settled_most = 0  # the bar never goes back, though a settled group may move again
    for sweep in range(max_iter):
        settled = 0
        for step, idx in enumerate(torch.randperm(len(groups), generator=gen).tolist()):
            if progress is not None:  # a wide group's step takes seconds: say where it is
                progress.update(
                    _fraction_done(sweep, step, settled_most, len(groups)),
                    1.0,
                    f"sweep {sweep + 1}: group {step + 1} of {len(groups)}",
                    open_ended=sweep > 0,
                )
            try:
                gain = problem.step(groups[idx], perms, solver, progress)
            except NonFiniteScore as exc:
                named = _name_non_finite(spec, state_a, state_b)
                if named is None:
                    raise
                raise named from exc
            settled += int(gain <= 0.0)
            value += gain
        result.objective_history.append(value)
        result.sweeps = sweep + 1
        if progress is not None:
            # How many sweeps remain is unknown; how many groups already stay put is the
            # honest measure of how near the end is (all of them: converged).
            settled_most = max(settled_most, settled)
            progress.update(
                _fraction_done(sweep + 1, 0, settled_most, len(groups)),
                1.0,
                f"sweep {sweep + 1}: objective {value:.6g}, "
                f"{settled} of {len(groups)} groups settled",
                open_ended=True,  # sweeps go on until one changes nothing: no telling when
            )
        if settled == len(groups):
            result.converged = True
            break
    result.perms = {g: p.cpu() for g, p in perms.items()}
    return result


# The share of the bar the first sweep fills: it computes every group's full cost, which
# later sweeps mostly update in place, so it takes most of the time.
_FIRST_SWEEP_SHARE = 0.7


def _fraction_done(sweep: int, step: int, settled: int, groups: int) -> float:
    """How far along the matching is, as the bar and its time estimate should read it.

    How many sweeps remain is unknown; the first sweep's steps are known and costly, and
    after it, how many groups already stay put is the honest measure of the rest."""
    if groups == 0:  # nothing to permute: done as soon as it starts
        return 1.0
    if sweep == 0:
        return _FIRST_SWEEP_SHARE * step / groups
    return _FIRST_SWEEP_SHARE + (1 - _FIRST_SWEEP_SHARE) * settled / groups


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MergerError(
            "weight matching was asked to run on CUDA but no CUDA device is available",
            hint="use device 'cpu' or 'auto'",
        )
    return torch.device(device)


def _check_models(
    spec: PermutationSpec, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
) -> None:
    for t in spec.tensors:
        if t not in a or t not in b:
            raise MergerError(
                "the permutation spec names a tensor that a model lacks",
                tensor=t,
                hint="pick the architecture that matches both checkpoints",
            )
        if a[t].shape != b[t].shape:
            raise MergerError(
                f"the models' shapes differ: {list(a[t].shape)} vs {list(b[t].shape)}",
                tensor=t,
                hint="weight matching needs two models of the same architecture and width",
            )


def _name_non_finite(
    spec: PermutationSpec, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
) -> MergerError | None:
    """The error naming the model and tensor with NaN/inf values, if any. Scanned only
    after a solver met a non-finite cost (a scan up front costs 8% of a ResNet's run)."""
    for label, state in (("A", a), ("B", b)):
        for t in cost_tensors(spec, state):
            if not bool(torch.isfinite(state[t]).all()):
                return MergerError(
                    f"model {label} has NaN or infinite values",
                    tensor=t,
                    hint="weight matching needs finite weights; check or re-export that model",
                )
    return None


def _initial_perms(
    spec: PermutationSpec, init: Mapping[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    perms = spec.identity()
    for g, p in (init or {}).items():
        if g not in perms:
            raise MergerError(f"initial permutations name an unknown group '{g}'")
        p = torch.as_tensor(p, dtype=torch.long).cpu()
        n = spec.sizes[g]
        if p.shape != (n,) or not torch.equal(torch.sort(p).values, torch.arange(n)):
            raise MergerError(f"the initial permutation of group '{g}' is not a permutation of {n}")
        perms[g] = p.clone()
    return perms


def _unfold(x: torch.Tensor, axis: int, block: int = 1) -> torch.Tensor:
    """Rows = the units along `axis`, columns = everything else.

    With `block` > 1 each unit owns `block` consecutive entries of the axis (a conv's
    channels flattened into a Linear's inputs), which go to its row."""
    return x.movedim(axis, 0).reshape(x.shape[axis] // block, -1)


def _select(
    x: torch.Tensor, dim: int, index: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """`x.index_select(dim, index)`, through a 2-D or 3-D view where x is contiguous.

    torch's index_select on a middle axis of a 4-D or 5-D tensor takes a generic path
    3-5× slower than the same copy seen as (before, axis, after). A non-contiguous x
    (a transposing view) keeps its shape: the one gather then also does the transpose."""
    shape = (*x.shape[:dim], len(index), *x.shape[dim + 1 :])
    target = None if out is None else out[: math.prod(shape)].view(shape)
    if not x.is_contiguous():
        return torch.index_select(x, dim, index, out=target)
    after = math.prod(shape[dim + 1 :])
    before = math.prod(shape[:dim])
    size, axis = ((len(index), after), 0) if before == 1 else ((before, len(index), after), 1)
    source = x.reshape(*size[:axis], x.shape[dim], after)
    target = None if target is None else target.view(size)
    return torch.index_select(source, axis, index, out=target).reshape(shape)


def _assigned_sum(cost: torch.Tensor, perm: torch.Tensor) -> float:
    """Σ_i cost[i, perm[i]] in float64 (numpy on the CPU: a tenth of torch's overhead
    for a few hundred entries, paid once or twice per step)."""
    if cost.device.type == "cpu":
        picked = cost.numpy()[np.arange(len(perm)), perm.numpy()]
        return float(picked.sum(dtype=np.float64))
    rows = torch.arange(len(perm), device=cost.device)
    return float(cost[rows, perm.to(cost.device)].sum(dtype=torch.float64))


def _copy_into(buffer: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x made contiguous in the front of the flat `buffer`."""
    return buffer[: x.numel()].view(x.shape).copy_(x)


class _Problem:
    """Both models' cost tensors on one device, and each group's cached cost matrix."""

    def __init__(
        self,
        spec: PermutationSpec,
        state_a: Mapping[str, torch.Tensor],
        state_b: Mapping[str, torch.Tensor],
        device: torch.device,
        check: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self._check = check  # raises Cancelled; called between slices of long products
        names = cost_tensors(spec, state_b)
        self.a = {t: state_a[t].detach().to(device, torch.float32).contiguous() for t in names}
        self.b = {t: state_b[t].detach().to(device, torch.float32).contiguous() for t in names}
        self.device = device
        # group -> entries (tensor, axis) that enter its cost
        self.entries = {
            g: [(t, ax) for t, ax in axes if t in self.a] for g, axes in spec.groups.items()
        }
        # group -> groups its cost depends on (other permuted axes of its tensors)
        self.deps: dict[str, set[str]] = {}
        self.self_coupled: set[str] = set()
        for g, entries in self.entries.items():
            deps: set[str] = set()
            for t, ax in entries:
                for other_ax, q in spec.axes_of(t):
                    if other_ax != ax:
                        deps.add(q)
            self.deps[g] = deps
            if g in deps:
                self.self_coupled.add(g)
        self.cost: dict[str, torch.Tensor] = {}
        self.snapshot: dict[str, dict[str, torch.Tensor]] = {}
        self.solved_at: dict[str, int] = {}  # group -> cost version last solved
        self.version: dict[str, int] = {}
        self.solvers: dict[str, WarmAssignment] = {}
        # Gathers and transposes by the compiled kernels (bitwise the same copies as torch's)
        self._compiled = device.type == "cpu" and copy_kernels.available()
        self._identities: dict[int, tuple[torch.Tensor, bool]] = {}
        self._buffers: list[torch.Tensor] = []

    # -- objective -----------------------------------------------------------------
    def objective(self, perms: Mapping[str, torch.Tensor], only: str | None = None) -> float:
        """Σ ⟨A_t, π(B_t)⟩ over all cost tensors, or those touching group `only`."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for t in self.a:
            if self._check is not None:
                self._check()
            axes = self.spec.axes_of(t)
            if only is not None and all(g != only for _, g in axes):
                continue
            b = self._permuted_b(t, perms, skip=None).contiguous()
            if self._compiled:  # no float64 copies of both tensors
                total += copy_kernels.dot64(self.a[t], b)
            else:
                total += (self.a[t] * b).sum(dtype=torch.float64)
        return float(total)

    def _permuted_b(
        self, t: str, perms: Mapping[str, torch.Tensor], skip: int | None
    ) -> torch.Tensor:
        value = self.b[t]
        for ax, g in self._gathers(t, skip, perms):
            value = _select(value, ax, self._index(t, ax, perms[g]))
        return value

    def _index(self, t: str, ax: int, units: torch.Tensor) -> torch.Tensor:
        """Entry indices along (t, ax) for these unit indices (whole blocks where blocked)."""
        return expand_blocks(units.to(self.device), self.spec.block(t, ax))

    # -- cost matrices -------------------------------------------------------------
    def _full_cost(self, g: str, perms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Group g's cost under `perms`: its fixed part plus the other entries' products."""
        cost = self._fixed_cost(g)  # not kept: at n = 8192 a copy per group is 268 MB
        for t, ax in self.entries[g]:
            if not self._is_fixed(t, ax):
                self._add_product(cost, self._a_rows(t, ax), self._b_cols(t, ax, perms))
        return cost

    def _add_product(self, cost: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """cost += rows @ cols, in slices of rows short enough that Cancel is answered
        within a fraction of a second (one 4096-wide product takes most of a second)."""
        n, k = rows.shape
        step = max(1, int(_FLOPS_PER_SLICE // max(1, 2 * k * cols.shape[1])))
        if self._check is None or step >= n:
            cost.addmm_(rows, cols)
            return
        for start in range(0, n, step):
            self._check()
            cost[start : start + step].addmm_(rows[start : start + step], cols)

    def _is_fixed(self, t: str, ax: int) -> bool:
        """Whether entry (t, ax)'s product never changes: t has no other permuted axis
        (biases, norm parameters, a first or last layer)."""
        return all(other == ax for other, _ in self.spec.axes_of(t))

    def _fixed_cost(self, g: str) -> torch.Tensor:
        """Σ A_rows @ B_rowsᵀ over group g's fixed entries, as one product of the entries
        side by side: a network has a dozen biases and norm vectors per group, whose
        outer products one at a time cost more in calls than in arithmetic."""
        fixed = [(t, ax) for t, ax in self.entries[g] if self._is_fixed(t, ax)]
        n = self.spec.sizes[g]
        if not fixed:
            return torch.zeros((n, n), dtype=torch.float32, device=self.device)
        rows = [
            (
                _unfold(self.a[t], ax, self.spec.block(t, ax)),
                _unfold(self.b[t], ax, self.spec.block(t, ax)),
            )
            for t, ax in fixed
        ]
        a_rows = torch.cat([a for a, _ in rows], dim=1)
        b_rows = torch.cat([b for _, b in rows], dim=1)
        return a_rows @ b_rows.T

    def _a_rows(self, t: str, ax: int) -> torch.Tensor:
        """A's tensor t, one row per unit on `ax` (a view when `ax` leads, else a copy)."""
        if ax == 1 and self._compiled and self._run(t, 1) >= _MIN_RUN:
            return self._transposed(self.a[t], None, self._scratch(2), t)
        moved = self.a[t].movedim(ax, 0)
        if not moved.is_contiguous():  # copy into mapped scratch: reshape would allocate
            moved = _copy_into(self._scratch(2), moved)
        return _unfold(moved, 0, self.spec.block(t, ax))

    def _transposed(
        self, x: torch.Tensor, index: torch.Tensor | None, buffer: torch.Tensor, t: str
    ) -> torch.Tensor:
        """Tensor t's rows for its axis-1 units, its axis 0 gathered by `index` (None:
        as is; a shorter index keeps those entries alone), copied into `buffer` by the
        compiled kernel."""
        shape = x.shape
        src = x.reshape(shape[0], shape[1], -1)
        kept = shape[0] if index is None else len(index)
        out = buffer[: shape[1] * kept * src.shape[2]].view(shape[1], kept, src.shape[2])
        copy_kernels.gather_transposed(src, index, out)
        return out.reshape(shape[1] // self.spec.block(t, 1), -1)

    def _middle(self, x: torch.Tensor, index: torch.Tensor, buffer: torch.Tensor, t: str):
        """Tensor t's rows for its axis-0 units with its axis 1 gathered by `index`,
        copied into `buffer` by the compiled kernel."""
        src = x.reshape(x.shape[0], x.shape[1], -1)
        out = buffer[: src.shape[0] * len(index) * src.shape[2]]
        out = out.view(src.shape[0], len(index), src.shape[2])
        copy_kernels.gather_middle(src, index, out)
        return _unfold(out, 0, self.spec.block(t, 0))

    def _b_cols(self, t: str, ax: int, perms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """B's tensor t with its other axes permuted, as columns: one per unit on `ax`.

        The cost is then A_rows @ B_cols. With the units on the leading axis, B is gathered
        in place (runs of a kernel's values or more) and its rows' transpose used as is: no
        copy at all while every neighbour is the identity, as in the first sweep. Otherwise
        one gather reads B through a view with the units last and writes the columns
        contiguous, gathering runs of at least n values.

        Nothing is cached between calls: on a small network most entries are needed once
        or twice, and new memory for a cached copy (page faults, measured at ~6 µs per
        4 KiB here) cost more than making the copy again; on a large one the copy is a
        rounding error beside the product."""
        gathers = self._gathers(t, ax, perms)
        compiled = self._compiled_cols(t, ax, gathers, perms)
        if compiled is not None:
            return compiled
        if ax == 0 and all(self._run(t, other) >= _MIN_RUN for other, _ in gathers):
            rows = self.b[t]
            for k, (other, q) in enumerate(gathers):
                rows = _select(rows, other, self._index(t, other, perms[q]), self._scratch(k % 2))
            return _unfold(rows, 0, self.spec.block(t, 0)).T
        n = self.b[t].shape[ax] // self.spec.block(t, ax)
        moved = self.b[t].movedim(ax, 0)
        # (units, block, other dims...) -> (block, other dims..., units), a view
        cols = moved.reshape(n, -1, *moved.shape[1:]).movedim(0, -1)
        for k, (other, q) in enumerate(gathers):
            dim = other + 1 if other < ax else other
            cols = _select(cols, dim, self._index(t, other, perms[q]), self._scratch(k % 2))
        if not cols.is_contiguous():
            cols = _copy_into(self._scratch(0), cols)
        return cols.reshape(-1, n)

    def _compiled_cols(
        self, t: str, ax: int, gathers: list[tuple[int, str]], perms: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """`_b_cols` by the compiled copies where they apply (a conv's leading axis with
        its second permuted, or its second axis with its first permuted), else None."""
        if not self._compiled or self._run(t, 1) < _MIN_RUN:
            return None
        others = [other for other, _ in gathers]
        if ax == 0 and others == [1]:
            shape = self.b[t].shape
            src = self.b[t].reshape(shape[0], shape[1], -1)
            out = self._scratch(0)[: src.numel()].view(src.shape)
            copy_kernels.gather_middle(src, self._index(t, 1, perms[gathers[0][1]]), out)
            return _unfold(out, 0, self.spec.block(t, 0)).T
        if ax == 1 and others in ([], [0]):
            index = self._index(t, 0, perms[gathers[0][1]]) if gathers else None
            return self._transposed(self.b[t], index, self._scratch(0), t).T
        return None

    def _scratch(self, k: int) -> torch.Tensor:
        """Buffer k, as large as the largest tensor: 0 and 1 take B's gathers in turn, 2
        A's transposed rows. Copies land in memory already mapped, not in fresh pages
        the system must fault in and zero (~6 µs per 4 KiB measured here: more than the
        copy itself on a small network)."""
        while len(self._buffers) <= k:
            largest = max(x.numel() for x in self.b.values())
            self._buffers.append(torch.empty(largest, dtype=torch.float32, device=self.device))
        return self._buffers[k]

    def _run(self, t: str, axis: int) -> int:
        """Contiguous values per index when B's tensor t is gathered along `axis` in place."""
        return math.prod(self.b[t].shape[axis + 1 :])

    def _gathers(
        self, t: str, skip: int | None, perms: Mapping[str, torch.Tensor]
    ) -> list[tuple[int, str]]:
        """(axis, group) of B's tensor t whose permutation must be applied: every permuted
        axis but `skip` whose permutation is not the identity."""
        return [
            (other, q)
            for other, q in self.spec.axes_of(t)
            if other != skip and q in perms and not self._is_identity(perms[q])
        ]

    def _is_identity(self, perm: torch.Tensor) -> bool:
        """Whether `perm` leaves every unit in place, remembered per tensor: permutations
        are replaced, never changed in place, and a step asks this a dozen times."""
        known = self._identities.get(id(perm))
        if known is None or known[0] is not perm:
            flag = bool(np.array_equal(perm.numpy(), np.arange(len(perm))))
            known = self._identities[id(perm)] = (perm, flag)  # holds perm: its id stays its
        return known[1]

    def _update_cost(self, g: str, perms: Mapping[str, torch.Tensor]) -> bool:
        """Bring group g's cost up to date with `perms`; return whether it changed."""
        snap = self.snapshot.get(g)
        if snap is None:
            self.cost[g] = self._full_cost(g, perms)
            self._take_snapshot(g, perms)
            return True
        changed = {}
        for q in self.deps[g]:
            if snap[q] is not perms[q]:  # replaced since: find where it differs
                pos = np.flatnonzero(snap[q].numpy() != perms[q].numpy())
                if len(pos):
                    changed[q] = torch.from_numpy(pos)
        if not changed:
            return False
        if self._update_work(g, changed, perms) > _FULL_RECOMPUTE_FRACTION:
            self.cost[g] = self._full_cost(g, perms)
        else:
            for t, ax in self.entries[g]:
                self._apply_delta(g, t, ax, snap, perms, changed)
        self._take_snapshot(g, perms)
        return True

    def _update_work(
        self, g: str, changed: Mapping[str, torch.Tensor], perms: Mapping[str, torch.Tensor]
    ) -> float:
        """An incremental update's work as a fraction of a full recompute's.

        Entry (t, ax)'s product costs ∝ t's size; its update ∝ that times the fraction of
        positions changed on t's other axes. So a neighbour that changed completely but
        touches one small entry does not force the group's big unchanged products to be
        redone."""
        total = work = 0.0
        for t, ax in self.entries[g]:
            size = float(self.a[t].numel())
            fraction = sum(
                len(changed[q]) / self.spec.sizes[q]
                for other, q in self.spec.axes_of(t)
                if other != ax and q in changed
            )
            total += size
            work += size * min(1.0, fraction)
        return work / total if total else 0.0

    def _apply_delta(
        self,
        g: str,
        t: str,
        ax: int,
        snap: Mapping[str, torch.Tensor],
        perms: Mapping[str, torch.Tensor],
        changed: Mapping[str, torch.Tensor],
    ) -> None:
        """Add the low-rank change of entry (t, ax) caused by changed neighbour perms.

        Axes are switched from old to new one at a time; each step's delta uses the new
        permutation on axes already switched and the old one on the rest, so the steps
        sum exactly to M(new) - M(old).
        """
        view = {b: snap[q] for b, q in self.spec.axes_of(t) if b != ax}
        # A conv's two unit axes (the other is `b`): the compiled copies apply
        compiled = self._compiled and set(view) | {ax} == {0, 1} and self._run(t, 1) >= _MIN_RUN
        for b, q in self.spec.axes_of(t):
            if b == ax or q not in changed:
                continue
            pos = changed[q].to(self.device)
            old, new = snap[q].to(self.device)[pos], perms[q].to(self.device)[pos]
            index = (self._index(t, b, pos), self._index(t, b, new), self._index(t, b, old))
            if compiled:
                rows, change = self._compiled_delta(t, ax, *index)
            else:
                a_part, b_new, b_old = (
                    _select(x, b, i)
                    for x, i in zip((self.a[t], self.b[t], self.b[t]), index, strict=True)
                )
                for c, perm_c in view.items():
                    if c != b:
                        idx = self._index(t, c, perm_c)
                        b_new, b_old = _select(b_new, c, idx), _select(b_old, c, idx)
                blk = self.spec.block(t, ax)
                rows, change = _unfold(a_part, ax, blk), _unfold(b_new - b_old, ax, blk)
            self.cost[g].addmm_(rows, change.T)  # float32: deltas are small, drift ~1e-7
            view[b] = perms[q]

    def _compiled_delta(
        self, t: str, ax: int, pos: torch.Tensor, new: torch.Tensor, old: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A's rows and B's change of a conv-like entry (units on axis 0 or 1, the other
        one changed at `pos`, now `new`, before `old`) by the compiled copies: one pass
        each, where torch's gathers on a middle axis and transposing reshapes took most
        of a late sweep's time."""
        copy = self._middle if ax == 0 else self._transposed
        rows = copy(self.a[t], pos, self._scratch(2), t)
        change = copy(self.b[t], new, self._scratch(0), t)
        change.sub_(copy(self.b[t], old, self._scratch(1), t))
        return rows, change

    def _take_snapshot(self, g: str, perms: Mapping[str, torch.Tensor]) -> None:
        # The permutations themselves, not copies: a step replaces a group's permutation
        # with a new tensor and never writes into one.
        self.snapshot[g] = {q: perms[q] for q in self.deps[g]}
        self.version[g] = self.version.get(g, 0) + 1

    # -- one coordinate-descent step -----------------------------------------------
    def step(
        self,
        g: str,
        perms: dict[str, torch.Tensor],
        solver: str,
        progress: Progress | None = None,
    ) -> float:
        """Re-solve group g's assignment; return the objective's gain (0 if none)."""
        self._update_cost(g, perms)
        if self.solved_at.get(g) == self.version[g]:
            return 0.0  # same cost as last solve: the current perm is its optimum
        cost = self.cost[g]
        old = perms[g]
        if g not in self.solvers:
            self.solvers[g] = WarmAssignment(solver=solver, device=self.device.type)
        solve = self.solvers[g].solve
        if len(old) >= _SLOW_SOLVE_SIZE:  # scipy may take seconds there: keep Cancel live
            found = run_cancellable(lambda: solve(cost), progress)
        else:
            found = solve(cost)
        self.solved_at[g] = self.version[g]
        if np.array_equal(found, old.numpy()):
            return 0.0
        # A tensor of its own: the solver keeps its answer as the next warm start, and
        # snapshots tell permutations apart by identity.
        new = torch.from_numpy(np.array(found, dtype=np.int64))
        if g in self.self_coupled:
            before = self.objective(perms, only=g)
            trial = dict(perms)
            trial[g] = new
            gain = self.objective(trial, only=g) - before
            scale = abs(before)
        else:
            old_score = _assigned_sum(cost, old)
            gain = _assigned_sum(cost, new) - old_score
            scale = abs(old_score)
        if gain <= max(1e-12, 1e-10 * scale):
            return 0.0
        perms[g] = new
        return gain
