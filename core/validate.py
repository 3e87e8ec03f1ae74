"""Is this recipe and set of models mergeable? Answered from the recipe and headers only,
before any tensor is read, so a merge never fails half-way for a reason known up front."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from core.checkpoints import TensorInfo, open_checkpoint
from core.compat import CompatReport, ExtraKeys, compare
from core.errors import CheckpointError, RecipeError
from core.methods import REGISTRY
from core.methods.params import (
    LayerIndex,
    check_value,
    resolve_params,
    unknown_keys,
    varies_by_tensor,
)
from core.methods.registry import MethodSpec
from core.recipe import ModelEntry, Recipe, suggest


def input_entries(recipe: Recipe, spec: MethodSpec) -> list[ModelEntry]:
    """The models a method combines: all of `models`, less the base where the method
    takes one apart (task vectors are relative to it). A method without a base (weight
    matching) treats a listed base_model as an ordinary model."""
    if recipe.base_model and spec.needs.base and not spec.needs.base_is_input:
        base = same_file_key(recipe.base_model)
        return [m for m in recipe.models if same_file_key(m.model) != base]
    return list(recipe.models)


def validate_recipe(recipe: Recipe) -> MethodSpec:
    """Check method, roles and parameter values without touching any tensor."""
    spec = REGISTRY.get(recipe.merge_method)
    needs = spec.needs
    if needs.base and not recipe.base_model:
        raise RecipeError(
            f"method '{spec.name}' needs a base model",
            hint="give the model the others were fine-tuned from: --base on the command "
            "line, role 'base' in the window, base_model: in a recipe",
        )
    inputs = input_entries(recipe, spec)
    if len(inputs) < needs.min_models:
        raise RecipeError(
            f"method '{spec.name}' needs at least {needs.min_models} input model(s)"
            f"{_besides(needs)}, got {len(inputs)}"
        )
    if needs.max_models is not None and len(inputs) > needs.max_models:
        counted = recipe.base_model and not needs.base
        raise RecipeError(
            f"method '{spec.name}' takes at most {needs.max_models} input model(s)"
            f"{_besides(needs)}, got {len(inputs)}"
            + (
                f" (it has no base model, so base {recipe.base_model} counts as one)"
                if counted
                else ""
            )
        )
    if needs.data and not recipe.data:
        raise RecipeError(
            f"method '{spec.name}' needs data",
            hint="give 'digits' or an .npz with an array x of inputs (--data on the command "
            "line, Data in the window, data: in a recipe)",
        )
    bad = unknown_keys(spec, recipe.parameters)
    if bad:
        raise RecipeError(
            f"method '{spec.name}' has no parameter(s) {', '.join(bad)}",
            hint=_takes(spec, bad, per_model=False),
        )
    for key, value in recipe.parameters.items():
        check_value(spec.param(key), value, where="parameters")
    for entry in recipe.models:
        bad = unknown_keys(spec, entry.parameters)
        if bad:
            raise RecipeError(
                f"{entry.model}: method '{spec.name}' has no parameter(s) {', '.join(bad)}",
                hint=_takes(spec, bad, per_model=True),
            )
        for key, value in entry.parameters.items():
            p = spec.param(key)
            if not p.per_model:
                raise RecipeError(
                    f"{entry.model}: parameter '{key}' applies to the whole merge",
                    hint="move it to the top-level parameters",
                )
            check_value(p, value, where=entry.model)
    if spec.check_params is not None and not _varies_by_tensor(recipe, inputs):
        params = resolve_params(spec, recipe.parameters, "", 0.0, per_model=False)
        model_params = [
            resolve_params(spec, e.parameters, "", 0.0, per_model=True, fallback=recipe.parameters)
            for e in inputs
        ]
        spec.check_params(params, model_params)
    return spec


def _takes(spec: MethodSpec, bad: Sequence[str], *, per_model: bool) -> str:
    """What the method takes (per model, or for the whole merge), with a 'did you mean'
    for the first unknown name when one is close."""
    names = [p.name for p in spec.params if p.per_model or not per_model]
    where = "per model it takes" if per_model else "it takes"
    return suggest(bad[0], names) + f"{where} {', '.join(names) or 'none'}"


def _varies_by_tensor(recipe: Recipe, inputs: Sequence[ModelEntry]) -> bool:
    """Does any parameter take a gradient or filter list (a value per tensor)?"""
    sources = [recipe.parameters, *(e.parameters for e in inputs)]
    return any(varies_by_tensor(v) for p in sources for v in p.values())


def same_file_key(path: str) -> str:
    """One key per file, whatever the spelling (relative, symlinked; loops do not raise)."""
    return os.path.realpath(os.path.expanduser(path))


def check_models(
    paths: Sequence[str], base: str | None = None, *, extra_keys: ExtraKeys = "ignore"
) -> CompatReport:
    """Open each model's headers and compare them with the reference (base or first)."""
    opened: dict[str, Mapping[str, TensorInfo]] = {}
    failures: dict[str, str] = {}
    order = ([base] if base else []) + [p for p in paths if p != base]
    for path in order:
        try:
            with open_checkpoint(path) as ckpt:
                opened[path] = {i.name: i for i in ckpt.infos()}
        except CheckpointError as exc:
            failures[path] = exc.message
    usable = [p for p in order if p in opened]
    if not usable:
        report = CompatReport(reference=order[0] if order else "")
    else:
        report = compare(
            (usable[0], opened[usable[0]]),
            [(p, opened[p]) for p in usable[1:]],
            extra_keys=extra_keys,
        )
        report = _blame_odd_reference(report, usable, opened, extra_keys)
    for path, message in failures.items():
        report.problems.setdefault(path, []).append(message)
    return report


def _blame_odd_reference(
    report: CompatReport,
    usable: Sequence[str],
    opened: Mapping[str, Mapping[str, TensorInfo]],
    extra_keys: ExtraKeys,
) -> CompatReport:
    """When the reference clashes with every other model and those agree with each other,
    the reference is the odd one: say so on it instead of flagging all the others.

    (Adding a mismatched model first makes it the base; flagging the good models then
    sends the user to the wrong rows.)"""
    ref, others = usable[0], usable[1:]
    if len(others) < 2 or not all(report.problems.get(p) for p in others):
        return report
    among = compare(
        (others[0], opened[others[0]]), [(p, opened[p]) for p in others[1:]], extra_keys=extra_keys
    )
    if not among.ok:
        return report
    first = report.problems[others[0]][0]
    blamed = CompatReport(reference=ref, notes=report.notes)
    blamed.problems = {p: [] for p in usable}
    blamed.problems[ref] = [
        f"differs from the other {len(others)} models, which agree with each other "
        f"({Path(others[0]).name}: {first}); remove it, or make another model the base"
    ]
    return blamed


def unused_filters(recipe: Recipe, names: Sequence[str]) -> list[str]:
    """Notes for name filters that match no tensor: a typo there silently does nothing."""
    notes = []
    sources = [("parameters", recipe.parameters)] + [(m.model, m.parameters) for m in recipe.models]
    for where, params in sources:
        for key, value in params.items():
            if not isinstance(value, list):
                continue
            for entry in value:
                flt = entry.get("filter") if isinstance(entry, Mapping) else None
                if flt is not None and str(flt) != "*" and not any(str(flt) in n for n in names):
                    notes.append(
                        f"{where}: filter '{flt}' of '{key}' matches no tensor; "
                        "its value is never used"
                    )
    return notes


def gradients_without_layers(recipe: Recipe, names: Sequence[str]) -> list[str]:
    """A note for gradients on a model with fewer than two numbered layers: a gradient
    spreads over `layers.N`, so each tensor then takes its first or last value by name
    (embeddings first; norms and heads last), which should not pass unsaid."""
    layers = LayerIndex(names)
    if layers.blocks >= 2:
        return []
    sources = [("parameters", recipe.parameters)] + [(m.model, m.parameters) for m in recipe.models]
    keys = sorted({key for _, params in sources for key, v in params.items() if _has_gradient(v)})
    if not keys:
        return []
    first = [n for n in names if layers.t(n) == 0.0]
    last = [n for n in names if layers.t(n) == 1.0]
    counted = "no numbered layers" if layers.blocks == 0 else "only one numbered layer"
    return [
        f"the gradient of {', '.join(repr(k) for k in keys)} spreads over numbered layers "
        f"(layers.N), but the models have {counted}: each tensor takes the gradient's first "
        f"value ({len(first)} tensor{'s' if len(first) != 1 else ''}, e.g. "
        f"{_examples(first)}) or its last "
        f"({len(last)}, e.g. {_examples(last)}); give single values, or name filters, to "
        "choose per tensor"
    ]


def _has_gradient(value: object) -> bool:
    """A list of two or more numbers, or a filtered list with one as a value."""
    if not isinstance(value, list):
        return False
    if len(value) >= 2 and all(isinstance(v, int | float) for v in value):
        return True
    return any(isinstance(e, Mapping) and _has_gradient(e.get("value")) for e in value)


def _examples(names: Sequence[str], most: int = 2) -> str:
    return ", ".join(f"'{n}'" for n in names[:most]) if names else "none"


_BROKEN_HINT = "this model is broken; merging it would spread the damage"


def check_finite(tensor: torch.Tensor, name: str, path: str, hint: str = _BROKEN_HINT) -> None:
    """Refuse NaN/Inf inputs, saying how many; a finite sum proves every element finite,
    cheaply."""
    if not tensor.dtype.is_floating_point or math.isfinite(float(tensor.sum())):
        return
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise CheckpointError(
            f"holds NaN or infinite values ({bad} of {tensor.numel()})",
            file=path,
            tensor=name,
            hint=hint,
        )


def check_state_finite(
    state: Mapping[str, torch.Tensor], path: str, hint: str = _BROKEN_HINT
) -> None:
    """`check_finite` on every tensor of a model, naming the first bad one."""
    for name, tensor in state.items():
        check_finite(tensor, name, path, hint)


def _besides(needs) -> str:
    """' besides the base' for methods that take one (linear and SLERP do not)."""
    return " besides the base" if needs.base else ""


def sign_notes(recipe: Recipe, spec: MethodSpec) -> list[str]:
    """A note where a negative weight will not do what its sign suggests.

    TIES (and DARE-TIES) with `normalize` divide each entry by the sum of the agreeing
    models' weights, so a lone negative weight cancels itself (mergekit does the same):
    the task is added, not subtracted. `lambda` < 0 subtracts, whatever normalize says."""
    if spec.name not in ("ties", "dare_ties"):
        return []
    normalize = recipe.parameters.get("normalize", spec.param("normalize").default)
    if normalize is not True:
        return []
    negative = [
        m.model
        for m in recipe.models
        if isinstance(
            w := m.parameters.get("weight", recipe.parameters.get("weight", 1.0)), int | float
        )
        and w < 0
    ]
    if not negative:
        return []
    return [
        f"{', '.join(negative)}: a negative weight does not subtract a task under "
        f"{spec.name} with normalize on (entries are divided by the agreeing weights' sum); "
        "to subtract, use lambda < 0, or set normalize: false"
    ]


def unused_settings(recipe: Recipe, spec: MethodSpec) -> list[str]:
    """Notes for settings this method ignores, which a user would expect to matter: a
    base model it does not use, data or an architecture it never reads, the weight of a
    base that has no task vector."""
    needs, name = spec.needs, spec.name
    notes = []
    inputs = {same_file_key(e.model) for e in input_entries(recipe, spec)}
    if recipe.base_model and not needs.base and same_file_key(recipe.base_model) not in inputs:
        notes.append(
            f"method '{name}' uses no base model: base_model {recipe.base_model} is not used"
            + (" (list it under models to average it in)" if needs.base_is_input else "")
        )
    elif recipe.base_model and not needs.base and not needs.base_is_input:
        first = same_file_key(input_entries(recipe, spec)[0].model)
        role = "model A, the one B is aligned to" if spec.kind == "model" else "an input"
        if first == same_file_key(recipe.base_model):
            notes.append(
                f"method '{name}' has no base model: base_model {recipe.base_model} is "
                f"taken as its first input ({role})"
            )
    if recipe.data and not (needs.data or needs.uses_data):
        notes.append(f"method '{name}' runs no data: data {recipe.data} is not used")
    if recipe.arch and not needs.arch:
        notes.append(f"method '{name}' needs no architecture: arch {recipe.arch} is not used")
    if recipe.base_model and needs.base and not needs.base_is_input:
        base = same_file_key(recipe.base_model)
        for entry in recipe.models:
            if same_file_key(entry.model) == base and entry.parameters:
                notes.append(
                    f"{entry.model}: the base model's parameters "
                    f"({', '.join(map(str, entry.parameters))}) are not used: under '{name}' "
                    "the base is what the other models' changes are measured from"
                )
    return notes
