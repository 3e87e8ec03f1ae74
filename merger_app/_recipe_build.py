"""Turn what the panels hold into a frozen `core.recipe.Recipe`, and back.

The window snapshots a recipe before each merge (the worker never sees widgets), and
Open Recipe fills the panels from one. Per-tensor values use mergekit's YAML forms,
which `core.methods.params` resolves: a gradient `[0, 0.5, 1]` across layers, and a
filtered list `[{filter: "attn", value: 0.3}, {value: 0.5}]`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import RecipeError
from core.methods.registry import MethodSpec
from core.recipe import ModelEntry, Recipe
from merger_app._model_rows import ModelRow, normalize_path


@dataclass(frozen=True)
class PerTensor:
    """Overrides of one parameter: (name filter, value) rows tried first, then a gradient."""

    filters: tuple[tuple[str, float], ...] = ()
    gradient: tuple[float, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.filters and not self.gradient


def parse_gradient(text: str, *, param: str = "value") -> tuple[float, ...]:
    """'0, 0.5, 1' → (0.0, 0.5, 1.0), also written as YAML's '[0, 0.5, 1]'; '' → ().
    A single number is no gradient, and an empty place ('0.1,,0.3') is a typo, not a
    value to skip."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    parts = [p.strip() for p in body.replace(";", ",").split(",")] if body.strip() else []
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise RecipeError(
            f"the gradient of '{param}' must be numbers separated by commas, like 0, 0.5, 1; "
            f"got '{text}'"
        ) from None
    if len(values) == 1:
        raise RecipeError(
            f"the gradient of '{param}' needs at least two numbers (first and last "
            "layer); leave it empty to use one value everywhere"
        )
    return values


def param_value(scalar: Any, per: PerTensor | None) -> Any:
    """The recipe value for a parameter: a scalar, a gradient list or a filtered list."""
    if per is None or per.empty:
        return scalar
    fallback: Any = list(per.gradient) if per.gradient else scalar
    if not per.filters:
        return fallback
    entries: list[dict[str, Any]] = [{"filter": f, "value": v} for f, v in per.filters]
    entries.append({"value": fallback})
    return entries


def split_value(value: Any, default: Any) -> tuple[Any, PerTensor]:
    """Inverse of `param_value`: (the scalar for the form, the per-tensor overrides).

    Forms the panels cannot show (a filter entry whose value is a gradient) raise
    RecipeError so Open Recipe can say which parameter it could not display.
    """
    if not isinstance(value, list | tuple):
        return value, PerTensor()
    if all(isinstance(v, Mapping) for v in value):
        filters: list[tuple[str, float]] = []
        scalar, gradient = default, ()
        for entry in value:
            inner = entry.get("value")
            if "filter" in entry:
                if isinstance(inner, list | tuple):
                    raise RecipeError("a filter entry with a gradient value cannot be shown")
                filters.append((str(entry["filter"]), inner))
            elif isinstance(inner, list | tuple):
                gradient = tuple(float(v) for v in inner)
            else:
                scalar = inner
        return scalar, PerTensor(tuple(filters), gradient)
    gradient = tuple(float(v) for v in value)
    return default, PerTensor((), gradient)


def roles_for(spec: MethodSpec, rows: Sequence[ModelRow]) -> tuple[str | None, list[ModelRow]]:
    """(base path, input rows) as this method will use them.

    A method without a base model takes every loaded model as an input, the base
    included, so loading the demo and switching to `linear` averages everything shown.
    """
    base = next((r for r in rows if r.role == "base"), None)
    if not spec.needs.base:
        return None, list(rows)
    return (base.path if base else None), [r for r in rows if r.role != "base"]


def build_recipe(
    spec: MethodSpec,
    rows: Sequence[ModelRow],
    values: Mapping[str, Any],
    per_tensor: Mapping[str, PerTensor],
    *,
    seed: int = 0,
    out_dtype: str | None = None,
    dtype: str | None = None,
    data: str | None = None,
    arch: str | None = None,
) -> Recipe:
    """A recipe from the panels' state; per-model params come from each row's values."""
    base, inputs = roles_for(spec, rows)
    per_model = [p for p in spec.params if p.per_model]
    models = tuple(
        ModelEntry(r.path, {p.name: r.values.get(p.name, p.default) for p in per_model})
        for r in inputs
    )
    params = {
        p.name: param_value(values.get(p.name, p.default), per_tensor.get(p.name))
        for p in spec.params
        if not p.per_model
    }
    return Recipe(
        merge_method=spec.name,
        models=models,
        base_model=base,
        parameters=params,
        out_dtype=out_dtype,
        dtype=dtype,
        seed=seed,
        data=data if (spec.needs.data or spec.needs.uses_data) else None,
        arch=arch if spec.needs.arch else None,
    )


def merge_blockers(
    spec: MethodSpec, rows: Sequence[ModelRow], *, data: str | None, arch: str | None = None
) -> list[str]:
    """Why Merge cannot run yet, in the words the hint label shows; [] when it can.

    A missing architecture blocks nothing: core detects built-in families from the
    checkpoint, and says clearly when it cannot. A mistyped one blocks (unknown family,
    `model.py` without its function, a file that is not there).
    """
    if not rows:
        return ["Add models to merge: File ▸ Add Models (Ctrl+O) or drop files on the window."]
    out = [
        f"{r.name}: {r.unreadable}. Put it back, or remove it from the list."
        for r in rows
        if r.unreadable
    ]
    base, inputs = roles_for(spec, rows)
    needs = spec.needs
    if needs.base and base is None:
        out.append(f"{spec.label} needs a base model: set one row's role to 'base'.")
    if len(inputs) < needs.min_models:
        out.append(
            f"{spec.label} needs at least {needs.min_models} input model(s)"
            + (" besides the base." if needs.base else ".")
        )
    if needs.max_models is not None and len(inputs) > needs.max_models:
        out.append(
            f"{spec.label} takes at most {needs.max_models} input model(s)"
            + (" besides the base" if needs.base else "")
            + f"; {len(inputs)} are loaded. Remove some or pick another method."
        )
    if needs.data and not data:
        out.append(f"{spec.label} needs data to run the models on: choose 'digits' or a .npz file.")
    if (needs.data or needs.uses_data) and data and data != "digits" and not Path(data).is_file():
        out.append(f"The data file {data} does not exist: choose 'digits' or a .npz file.")
    from core.architectures import architecture_problem  # loads torch: not at import

    if needs.arch and (problem := architecture_problem(arch)):
        out.append(f"Architecture: {problem}.")
    elif (
        needs.arch
        and inputs
        and not any(r.problem for r in rows)
        and (fit := _fit_problem(arch or "", inputs[0].path))
    ):
        out.append(_misfit(inputs[0].name, arch, fit))
    out.extend(f"{r.name} cannot be merged: {r.problem}" for r in rows if r.problem)
    return out


def _misfit(name: str, arch: str | None, why: str) -> str:
    """Model A does not fit: what to do first (the hint shows one line), then why."""
    if arch:
        return (
            f"{name} does not fit '{arch}': pick the architecture it was trained with, or "
            f"your model's .py under Architecture. Why: {why}"
        )
    return (
        f"{name} fits no built-in architecture: pick your model's .py under Architecture "
        f"(path/model.py:factory). Why: {why}"
    )


def _fit_problem(arch: str, path: str) -> str | None:
    """Whether model A fits the architecture (or one is detected), from its headers; asked
    again only when the file changes, since the form asks on every edit."""
    stamp = disk_stamp(path)
    if any(len(entry) < 3 for entry in stamp):
        return None  # the row's own problem, or the merge's error, says why
    return _fit_problem_cached(arch, path, stamp)


@functools.lru_cache(maxsize=64)
def _fit_problem_cached(arch: str, path: str, _stamp: tuple) -> str | None:
    from core.architectures import checkpoint_architecture_problem

    return checkpoint_architecture_problem(arch or None, path)


def rows_from_recipe(recipe: Recipe, spec: MethodSpec) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, role, per-model values) for each model a recipe names, base first.

    A per-model parameter a model does not set takes the recipe's top-level value (as in
    mergekit and `merger run`, and as `merger merge --save-recipe` writes them)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    base = normalize_path(recipe.base_model) if recipe.base_model else None
    if base:
        out.append((base, "base", {}))
    per_model = {p.name for p in spec.params if p.per_model}
    for entry in recipe.models:
        path = normalize_path(entry.model)
        vals = {
            k: entry.parameters.get(k, recipe.parameters.get(k))
            for k in per_model
            if k in entry.parameters or k in recipe.parameters
        }
        if path == base:
            out[0] = (path, "base", vals)  # mergekit lists the base among models too
            continue
        out.append((path, "input", vals))
    return out


def files_stamp(recipe: Recipe | None) -> tuple:
    """What a recipe's files are on disk now (`disk_stamp` of each model, the data file and
    an architecture's .py). Equal stamps: nothing the recipe reads has changed."""
    if recipe is None:
        return ()
    paths = [m.model for m in recipe.models]
    paths += [recipe.base_model] if recipe.base_model else []
    paths += [recipe.data] if recipe.data and recipe.data != "digits" else []
    paths += [recipe.arch.rsplit(":", 1)[0]] if recipe.arch and ".py:" in recipe.arch else []
    return tuple(entry for path in paths for entry in disk_stamp(path))


def disk_stamp(path: str | Path) -> tuple:
    """(path, modified, size) of a file, or of each file in a folder (a shard rewritten in
    place leaves the folder's own stat alone); (path,) for one that cannot be read."""
    path = Path(path)
    try:
        files = sorted(path.iterdir()) if path.is_dir() else [path]
    except OSError:  # an unreadable folder: the merge will say so
        files = [path]
    stamp = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            stamp.append((str(f),))
            continue
        stamp.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(stamp)
