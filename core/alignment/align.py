"""Align model B to model A, and interpolate between them: the glue used by the
`weight_matching` / `activation_matching` methods, `merger align` and the GUI.

Alignment finds permutations π of B's hidden units (by weights or by activations on
data), so that π(B) computes the same function as B but lies close to A. Interpolating
(1−λ)·A + λ·π(B) then crosses a much lower loss barrier than interpolating A and B
(Git Re-Basin). BatchNorm running statistics of an interpolated network are wrong
(variance collapse), so they are re-estimated on data when data is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from core.alignment.batchnorm import reset_bn_stats
from core.alignment.spec import Perms
from core.alignment.weight_matching import matching_objective, weight_matching
from core.architectures import Architecture, resolve_architecture
from core.data import Dataset
from core.data.fit import check_fits, forward_errors
from core.errors import MergerError
from core.jobs import Progress

# Fewest examples BatchNorm statistics are re-estimated from (a variance needs two), and
# below how many the result is called rough: batch statistics of a few dozen examples
# swing by tens of percent.
MIN_BN_EXAMPLES = 2
FEW_BN_EXAMPLES = 100

State = Mapping[str, torch.Tensor]


@dataclass
class Alignment:
    """B's permutations towards A, with what a user wants to know about them."""

    arch: Architecture
    perms: Perms
    aligned_b: dict[str, torch.Tensor]
    objective_before: float
    objective_after: float
    sweeps: int = 0
    notes: list[str] = field(default_factory=list)


def align(
    state_a: State,
    state_b: State,
    *,
    arch: str | None = None,
    method: str = "weight",
    data: Dataset | None = None,
    max_iter: int = 100,
    seed: int = 0,
    solver: str = "auto",
    metric: str = "correlation",
    batches: int = 20,
    device: str = "cpu",
    progress: Progress | None = None,
    allow_code: bool = True,
    source: str | None = None,
) -> Alignment:
    """Permute B to match A by `method` ("weight" or "activation"); `source` (A's file)
    is named in errors about the architecture."""
    progress = progress or Progress()
    architecture = resolve_architecture(
        arch,
        state_a,
        allow_code=allow_code,
        source=source,
        input_shape=data.input_shape if data is not None else None,
    )
    spec = architecture.spec
    before = matching_objective(spec, state_a, state_b, spec.identity())
    data_notes: list[str] = []  # what the data could not tell apart (activation matching)
    if method == "weight":
        result = weight_matching(
            spec,
            state_a,
            state_b,
            max_iter=max_iter,
            seed=seed,
            progress=progress,
            solver=solver,
            device=device,
        )
        perms, sweeps = result.perms, result.sweeps
        ending = (
            f"weight matching converged after {sweeps} sweep(s)"
            if result.converged
            else f"weight matching stopped at the sweep limit ({max_iter}) before converging; "
            "a higher max_iter may raise the objective"
        )
    else:
        from core.alignment.activations import match_by_activations

        if data is None:
            raise ValueError("activation matching needs data")
        perms = match_by_activations(
            architecture,
            state_a,
            state_b,
            data,
            metric=metric,
            batches=batches,
            solver=solver,
            progress=progress,
            notes=data_notes,
        )
        sweeps = 0
        ending = None
    aligned = spec.apply(state_b, perms)
    after = matching_objective(spec, state_a, aligned, spec.identity())
    measure = (
        "matching objective ⟨A, π(B)⟩"
        if method == "weight"  # activation matching optimizes another score: say so
        else "weight similarity ⟨A, π(B)⟩ (not the score activation matching maximizes)"
    )
    notes = [
        f"architecture {architecture.name}: {len(spec.groups)} permutation group(s)",
        f"{measure} {before:.6g} → {after:.6g}",
    ]
    if not spec.groups:
        notes.append(
            "nothing to permute: the model has no hidden units between its input and "
            "output, so B stays as it is"
        )
    elif ending:
        notes.append(ending)
    notes += data_notes
    return Alignment(
        architecture, perms, aligned, before, after, sweeps, notes + architecture.notes
    )


def interpolate(state_a: State, state_b: State, lam: float) -> dict[str, torch.Tensor]:
    """(1−λ)·A + λ·B for floating tensors; integer buffers (counters) come from A."""
    out = {}
    for name, a in state_a.items():
        b = state_b[name]
        if a.is_floating_point():
            out[name] = torch.lerp(a.float(), b.float(), float(lam)).to(a.dtype)
        else:
            out[name] = a.clone()
    return out


def repair_batchnorm(
    arch: Architecture,
    state: dict[str, torch.Tensor],
    data: Dataset | None,
    *,
    batches: int = 50,
) -> tuple[dict[str, torch.Tensor], int]:
    """Re-estimate BatchNorm statistics of `state` on `data`; returns the new state and
    how many BN layers were updated (0 when there are none or no data)."""
    if data is None:
        return state, 0
    if len(data) < MIN_BN_EXAMPLES:
        raise MergerError(
            f"BatchNorm statistics cannot be re-estimated from {len(data)} example(s): "
            "they are a mean and a variance over the examples",
            file=data.where,
            hint="give more examples (a few hundred give steady statistics), or turn "
            "Re-estimate BatchNorm off (reset_bn: false)",
        )
    check_fits(data, arch.input_shape)
    model = arch.build(state)
    with forward_errors(data):
        count = reset_bn_stats(model, data, batches=batches)
    if count == 0:
        return state, 0
    fresh = model.state_dict()
    return {k: fresh[k].detach().to(v.dtype) for k, v in state.items()}, count
