"""What to merge and how, as data — YAML in mergekit's vocabulary.

A recipe is frozen: the GUI snapshots one from its panels and hands it to the worker;
the CLI reads one from a file; the merged file stores the one that made it. Recipes
that people publish beside mergekit merges (`linear`, `slerp`, `task_arithmetic`,
`ties`, `dare_linear`, `dare_ties` with `models`, `base_model`, `parameters`, `dtype`,
`out_dtype`) load unchanged. Keys we add: `seed` (random methods), `data` and `arch`
(methods that need data or an architecture).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from core.checkpoints.folder import WEIGHT_EXTENSIONS
from core.errors import RecipeError

DTYPES = ("float32", "float16", "bfloat16", "float64")
TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}
_DTYPE_ALIASES = {
    "fp32": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
    "half": "float16",
    "float": "float32",
    "fp64": "float64",
    "double": "float64",
}
# mergekit keys that we understand but do not implement, and what to tell the user.
_UNSUPPORTED = {
    "modules": "per-module definitions are not supported; list whole models under 'models'",
    "tokenizer": "tokenizer merging is not supported; copy the tokenizer files yourself",
    "tokenizer_source": "tokenizer merging is not supported; copy the tokenizer files yourself",
    "chat_template": "chat templates are not handled; copy the template yourself",
}
_KNOWN = {
    "merge_method",
    "models",
    "slices",
    "base_model",
    "parameters",
    "dtype",
    "out_dtype",
    "seed",
    "data",
    "arch",
    "name",
    "merger",
}

_MODEL_KEYS = {"model", "parameters"}


def suggest(name: str, choices: Iterable[str]) -> str:
    """ "did you mean 'x'? " for a near miss among `choices`, else ""."""
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def normalize_dtype(value: Any, *, key: str) -> str | None:
    if value is None:
        return None
    text = _DTYPE_ALIASES.get(str(value).lower(), str(value).lower())
    if text not in DTYPES:
        raise RecipeError(f"'{key}' must be one of {', '.join(DTYPES)}, not '{value}'")
    return text


@dataclass(frozen=True)
class ModelEntry:
    """One input model and its per-model parameters (e.g. weight, density)."""

    model: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    merge_method: str
    models: tuple[ModelEntry, ...]
    base_model: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    seed: int = 0
    data: str | None = None
    arch: str | None = None
    # Layers covered by a mergekit `slices` recipe of whole models (layer_range [0, n]),
    # checked against the models when they are opened; None for a `models` recipe.
    slice_layers: int | None = None
    # The file the recipe was read from, for messages about it (not part of the recipe:
    # never saved, never compared).
    source: str | None = field(default=None, compare=False)

    # -- construction ---------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "recipe", root: Path | None = None) -> Recipe:
        """Build and shape-check a recipe from parsed YAML; paths resolve against `root`."""
        if not isinstance(raw, Mapping):
            raise RecipeError("a recipe must be a mapping of keys to values", file=source)
        for key, why in _UNSUPPORTED.items():
            if key in raw:
                raise RecipeError(f"'{key}': {why}", file=source)
        unknown = sorted(map(str, set(raw) - _KNOWN))
        if unknown:
            raise RecipeError(
                f"unknown key(s) {', '.join(unknown)}",
                file=source,
                hint=suggest(unknown[0], _KNOWN) + f"known keys: {', '.join(sorted(_KNOWN))}",
            )
        if "merge_method" not in raw:
            raise RecipeError("'merge_method' is missing", file=source)
        slice_layers = None
        if "slices" in raw:
            if raw.get("models"):
                raise RecipeError("give 'models' or 'slices', not both", file=source)
            models_raw, slice_layers = _whole_model_slices(raw["slices"], source)
        else:
            models_raw = raw.get("models") or []
        if not isinstance(models_raw, list):
            raise RecipeError("'models' must be a list", file=source)
        models = []
        for i, entry in enumerate(models_raw):
            if isinstance(entry, str):
                entry = {"model": entry}
            if not isinstance(entry, Mapping) or "model" not in entry:
                raise RecipeError(f"models[{i}] needs a 'model' path", file=source)
            unknown = sorted(map(str, set(entry) - _MODEL_KEYS))
            if unknown:  # a typo here would silently drop the entry's parameters
                raise RecipeError(
                    f"models[{i}] ({entry['model']}): unknown key(s) {', '.join(unknown)}",
                    file=source,
                    hint=suggest(unknown[0], _MODEL_KEYS) + "a model entry takes 'model' and "
                    "'parameters'",
                )
            params = entry.get("parameters") or {}
            if not isinstance(params, Mapping):
                raise RecipeError(f"models[{i}].parameters must be a mapping", file=source)
            models.append(ModelEntry(_resolve(entry["model"], root), dict(params)))
        params = raw.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise RecipeError("'parameters' must be a mapping", file=source)
        base = raw.get("base_model")
        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RecipeError(f"'seed' must be an integer, not {seed!r}", file=source)
        return cls(
            merge_method=str(raw["merge_method"]),
            models=tuple(models),
            base_model=_resolve(base, root) if base else None,
            parameters=dict(params),
            dtype=normalize_dtype(raw.get("dtype"), key="dtype"),
            out_dtype=normalize_dtype(raw.get("out_dtype"), key="out_dtype"),
            seed=seed,
            data=_resolve_data(raw.get("data"), root),
            arch=_resolve_arch(raw.get("arch"), root),
            slice_layers=slice_layers,
        )

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "recipe", root: Path | None = None) -> Recipe:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"not valid YAML: {_yaml_problem(exc)}", file=source) from None
        return cls.from_dict(raw, source=source, root=root)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if path.name.lower().endswith(WEIGHT_EXTENSIONS):
            raise RecipeError(
                "this is a model file, not a recipe",
                file=path,
                hint=f"give a .yaml recipe; `merger info {path}` shows the recipe a merged "
                "model was made with",
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or f"not UTF-8 text ({exc})"
            raise RecipeError(f"cannot read the recipe: {why}", file=path) from None
        return replace(cls.from_yaml(text, source=str(path), root=path.parent), source=str(path))

    # -- output ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"merge_method": self.merge_method}
        if self.base_model:
            out["base_model"] = self.base_model
        out["models"] = [
            {"model": m.model, **({"parameters": dict(m.parameters)} if m.parameters else {})}
            for m in self.models
        ]
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        for key in ("dtype", "out_dtype", "data", "arch"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.seed:
            out["seed"] = self.seed
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, path: str | Path) -> None:
        from core.atomic import write_text_atomic

        write_text_atomic(Path(path), self.to_yaml())

    def with_(self, **changes: Any) -> Recipe:
        return replace(self, **changes)

    # -- queries --------------------------------------------------------------
    def refuse_code(self) -> None:
        """Raise RecipeError, naming the recipe's file, when `arch` names a Python file
        (`path/to/model.py:factory`): running the recipe would import and run it, which a
        recipe from someone else must not do unasked. For fronts not allowed to
        (`merger run` without --allow-code), before any model is read."""
        from core.architectures import is_file_reference

        if not self.arch or not is_file_reference(self.arch):
            return
        raise RecipeError(
            f"'arch: {self.arch}' would import and run the Python file "
            f"{self.arch.rpartition(':')[0]}",
            file=self.source or "the recipe",
            hint="if you trust that file, add --allow-code (the app asks first)",
        )

    def model_paths(self) -> list[str]:
        """Every distinct model path, base first."""
        paths = [self.base_model] if self.base_model else []
        for m in self.models:
            if m.model not in paths:
                paths.append(m.model)
        return paths


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint on one line: what is wrong, where (line and column, with
    that line's text), and what it was reading, without the source-excerpt layout whose
    '^' only lines up across several lines."""
    mark = getattr(exc, "problem_mark", None)
    if not isinstance(exc, yaml.MarkedYAMLError) or mark is None:
        return " ".join(str(exc).split())
    lines = mark.buffer.split("\n") if mark.buffer else []
    text = lines[mark.line].strip().rstrip("\x00") if mark.line < len(lines) else ""
    out = f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    out += f" ('{text}')" if text else ""
    if exc.context:
        context_mark = exc.context_mark
        started = f" that starts at line {context_mark.line + 1}" if context_mark else ""
        out += f", {exc.context}{started}"
    return " ".join(out.split())


_FRANKEN = (
    "layer slices that stack layers from different models or ranges (frankenmerges) are "
    "not supported"
)


def _whole_model_slices(slices: Any, source: str) -> tuple[list[dict[str, Any]], int]:
    """mergekit's `slices` form for whole models, as its own SLERP example writes it: one
    slice whose sources all take layer_range [0, n]. Returns `models` entries and n (the
    layer count, checked against the models when opened). Anything else is a frankenmerge."""
    if not isinstance(slices, list) or len(slices) != 1 or not isinstance(slices[0], Mapping):
        raise RecipeError(
            f"'slices': {_FRANKEN}; one slice of whole models is",
            file=source,
            hint="list whole models under 'models'",
        )
    sources = slices[0].get("sources")
    if not isinstance(sources, list) or not sources:
        raise RecipeError("'slices': the slice needs a list of 'sources'", file=source)
    models, ranges = [], set()
    for i, src in enumerate(sources):
        if not isinstance(src, Mapping) or "model" not in src:
            raise RecipeError(f"slices[0].sources[{i}] needs a 'model' path", file=source)
        unknown = sorted(map(str, set(src) - {"model", "layer_range", "parameters"}))
        if unknown:
            raise RecipeError(
                f"slices[0].sources[{i}]: unknown key(s) {', '.join(unknown)}", file=source
            )
        rng = src.get("layer_range")
        if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) for v in rng)):
            raise RecipeError(
                f"slices[0].sources[{i}]: layer_range must be [first, end], not {rng!r}",
                file=source,
            )
        ranges.add(tuple(rng))
        models.append({k: v for k, v in src.items() if k != "layer_range"})
    (first, end), *others = sorted(ranges)
    if others or first != 0 or end <= 0:
        raise RecipeError(
            f"'slices': {_FRANKEN}; every source must take layer_range [0, n], the whole model",
            file=source,
            hint="list whole models under 'models'",
        )
    return models, end


def _resolve(path: Any, root: Path | None) -> str:
    """A model path as given, or relative to the recipe's folder when that exists."""
    text = str(path)
    p = Path(text).expanduser()
    if p.is_absolute() or root is None or p.exists():
        return str(p)
    candidate = root / p
    return str(candidate) if candidate.exists() else str(p)


def _resolve_data(value: Any, root: Path | None) -> str | None:
    if value is None:
        return None
    text = str(value)
    if text.strip().lower() == "digits" and not Path(text).exists():  # the built-in set,
        return "digits"  # however it is capitalised (a file of that name would win)
    return _resolve(text, root)


def _resolve_arch(value: Any, root: Path | None) -> str | None:
    if value is None:
        return None
    text = str(value)
    if ".py:" in text:
        file, _, factory = text.rpartition(":")
        return f"{_resolve(file, root)}:{factory}"
    return text
