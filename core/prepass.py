"""The pass over whole models that some tensorwise methods need before the merge streams.

A tensorwise merge sees one tensor at a time. TIES with `trim: model` needs each task
vector's magnitude threshold over the whole model first; its `prepare` hook gets a
`PrepareContext` whose `task_vectors` reads every floating-point tensor of the base
and the inputs once per call (streamed, one tensor at a time, so memory stays flat).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from core.checkpoints import Checkpoint
from core.errors import RecipeError
from core.jobs import Progress
from core.methods.context import PrepareContext
from core.methods.params import resolve_params, varies_by_tensor
from core.methods.registry import MethodSpec
from core.recipe import ModelEntry, Recipe


def prepare_method(
    spec: MethodSpec,
    recipe: Recipe,
    base: Checkpoint | None,
    inputs: Sequence[Checkpoint],
    entries: Sequence[ModelEntry],
    progress: Progress,
) -> tuple[list[dict[str, Any]] | None, Progress]:
    """Run `spec.prepare`, if any: extra per-model parameters, one dict per input; and
    the progress the merge itself reports into (the part of the bar the passes left)."""
    if spec.prepare is None:
        return None, progress
    raw = [recipe.parameters, *(e.parameters for e in entries)]
    reference = base if base is not None else inputs[0]
    names = [i.name for i in reference.infos() if i.dtype.is_floating_point]
    # each declared pass and then the merge get an equal share of the bar; set below,
    # once the method says how many passes these settings take
    shares: Iterator[Progress] = iter(())

    def task_vectors(label: str) -> Iterator[list[torch.Tensor]]:
        if base is None:
            raise RecipeError(f"method '{spec.name}' needs a base model for this setting")
        stage = next(shares, progress)  # an undeclared pass reports over the whole bar
        for k, name in enumerate(names):
            stage.update(k, len(names), f"{label}: {name}")
            theta0 = base.get(name, dtype=torch.float32, check=progress.check)
            yield [
                m.get(name, dtype=torch.float32, check=progress.check).sub_(theta0) for m in inputs
            ]

    ctx = PrepareContext(
        params=resolve_params(spec, recipe.parameters, "", 0.0, per_model=False),
        model_params=[
            resolve_params(spec, e.parameters, "", 0.0, per_model=True, fallback=recipe.parameters)
            for e in entries
        ],
        varies=lambda name: any(varies_by_tensor(source.get(name)) for source in raw),
        task_vectors=task_vectors,
        check=progress.check,
    )
    passes = spec.prepare_passes(ctx) if spec.prepare_passes is not None else 1
    share = 1 / (passes + 1)
    shares = iter([progress.within(i * share, (i + 1) * share) for i in range(passes)])
    extra = spec.prepare(ctx)
    return extra, progress.within(passes * share, 1.0) if passes else progress
