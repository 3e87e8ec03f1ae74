"""Resolve recipe parameter values for one tensor, the way mergekit's YAML means them.

A value in a recipe can be:

* a scalar (`0.5`) — used everywhere;
* a gradient (`[0, 0.5, 1]`) — linearly interpolated over the layer position t ∈ [0, 1];
* a filtered list (`[{filter: self_attn, value: 0.3}, {value: 0.7}]`) — the first entry whose
  `filter` is a substring of the tensor name wins; an entry without a filter is the fallback.
  An entry's value may itself be a gradient.

Layer positions come from `LayerIndex`, which finds the block number in tensor names
(`model.layers.12.mlp.weight` → block 12) and maps the blocks in order onto [0, 1].
Tensors outside the blocks get t = 0 on the input side (embeddings) and t = 1 on the output
side (final norm, head), as mergekit treats its pre- and post-weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from core.errors import RecipeError
from core.methods.registry import MethodSpec, Param
from core.recipe import suggest

_TRAILING_DIGITS = re.compile(r"(\d+)$")
# Tensors outside the numbered blocks: input side (t = 0) or output side (t = 1), by name,
# since safetensors files list names alphabetically (`lm_head` before `model.layers`).
_INPUT_SIDE = re.compile(r"embed|wte|wpe|tok|patch|stem|pos_|cls_token|^conv1\.|^bn1\.|^input")
_OUTPUT_SIDE = re.compile(r"head|norm|ln_f|final|classifier|^fc\.|output|pooler|score")


def block_key(name: str) -> tuple[int, ...] | None:
    """Depth key of a tensor in a numbered block, or None outside the blocks.

    The first purely numeric path component is the block (`model.layers.12.mlp` → (12,));
    digits attached to earlier components count before it, so torchvision's
    `layer3.1.conv1` → (3, 1) sorts after every `layer2.*`.
    """
    key: list[int] = []
    for part in name.split("."):
        if part.isdigit():
            return (*key, int(part))
        match = _TRAILING_DIGITS.search(part)
        if match:
            key.append(int(match.group(1)))
    return None


class LayerIndex:
    """Positions t ∈ [0, 1] of tensors along the network's depth, from their names."""

    def __init__(self, names: Sequence[str]) -> None:
        self._key_of = {n: k for n in names if (k := block_key(n)) is not None}
        keys = sorted(set(self._key_of.values()))
        self._rank = {k: i for i, k in enumerate(keys)}
        self._count = len(keys)
        self._pos = {n: i for i, n in enumerate(names)}
        self._first_block_pos = next((i for i, n in enumerate(names) if n in self._key_of), None)

    @property
    def blocks(self) -> int:
        """How many numbered blocks (layers) the names hold."""
        return self._count

    def t(self, name: str) -> float:
        """Layer position of `name`: 0 for the first block, 1 for the last."""
        if name in self._key_of:
            if self._count <= 1:
                return 0.0
            return self._rank[self._key_of[name]] / (self._count - 1)
        if _INPUT_SIDE.search(name):
            return 0.0
        if _OUTPUT_SIDE.search(name):
            return 1.0
        pos = self._pos.get(name)  # unknown name: where it stands in the file
        if pos is None or self._first_block_pos is None:
            return 0.0
        return 0.0 if pos < self._first_block_pos else 1.0


def interpolate_gradient(values: Sequence[float], t: float) -> float:
    """Value of a gradient list at position t, linear between evenly spaced anchors."""
    if len(values) == 1:
        return float(values[0])
    x = min(max(t, 0.0), 1.0) * (len(values) - 1)
    lo = min(int(x), len(values) - 2)
    frac = x - lo
    return float(values[lo]) * (1 - frac) + float(values[lo + 1]) * frac


NO_MATCH = object()  # a filter list with no entry for this tensor


def varies_by_tensor(value: Any) -> bool:
    """A gradient or a filter list (or a stray mapping): a value that changes by tensor."""
    return isinstance(value, list | tuple | Mapping)


def resolve_value(value: Any, name: str, t: float, *, param: str) -> Any:
    """The scalar that `value` takes for tensor `name` at layer position `t`
    (`NO_MATCH` when a filter list has no entry for it and no fallback)."""
    if isinstance(value, list | tuple):
        if not value:
            raise RecipeError(f"parameter '{param}' is an empty list")
        if all(isinstance(v, Mapping) for v in value):
            for entry in value:
                flt = entry.get("filter")
                if flt is None or str(flt) == "*" or str(flt) in name:
                    if "value" not in entry:
                        raise RecipeError(f"parameter '{param}': a filter entry has no 'value'")
                    return resolve_value(entry["value"], name, t, param=param)
            return NO_MATCH  # as in mergekit: the parameter's default applies
        if any(isinstance(v, Mapping) for v in value):
            raise RecipeError(f"parameter '{param}' mixes filter entries and numbers")
        try:
            return interpolate_gradient([float(v) for v in value], t)
        except (TypeError, ValueError):
            raise RecipeError(
                f"parameter '{param}': a gradient must be a list of numbers"
            ) from None
    if isinstance(value, Mapping):
        raise RecipeError(
            f"parameter '{param}' must be a value, a list (gradient) or a list of "
            "{filter, value} entries"
        )
    return value


def check_value(p: Param, value: Any, *, where: str) -> None:
    """Validate every scalar a (possibly per-tensor) value can take, before any work starts."""
    if isinstance(value, list | tuple):
        if not value:
            raise RecipeError(f"{where}: parameter '{p.name}' is an empty list")
        if not p.per_tensor:
            raise RecipeError(f"{where}: parameter '{p.name}' cannot vary by tensor or layer")
        for v in value:
            if isinstance(v, Mapping):
                _check_filter_entry(p, v, where=where)
                v = v["value"]
            check_value(p, v, where=where)
        return
    if isinstance(value, Mapping):
        resolve_value(value, "", 0.0, param=p.name)  # raises the shape error
    p.coerce(value, where=where)


def _check_filter_entry(p: Param, entry: Mapping, *, where: str) -> None:
    """A {filter, value} entry has those keys and a value: a misspelt `fliter` would
    otherwise make the entry a fallback that applies to every tensor."""
    unknown = sorted(map(str, set(entry) - {"filter", "value"}))
    if unknown:
        raise RecipeError(
            f"{where}: parameter '{p.name}': an entry has unknown key(s) {', '.join(unknown)}",
            hint=suggest(unknown[0], ("filter", "value"))
            + "entries are {filter: part of a tensor name, value: V}; one without a filter "
            "is the fallback",
        )
    if "value" not in entry:
        raise RecipeError(f"{where}: parameter '{p.name}': an entry has no 'value'")


def resolve_params(
    spec: MethodSpec,
    raw: Mapping[str, Any],
    name: str,
    t: float,
    *,
    per_model: bool,
    fallback: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve and type the parameters of `spec` for tensor `name`.

    `per_model` selects the per-model parameters (weight, density, ...); the others
    are global. A value that is missing from `raw`, or whose filters do not name this
    tensor, comes from `fallback` (the recipe's global parameters) and then from the
    parameter's default — mergekit's order of precedence.
    """
    out: dict[str, Any] = {}
    for p in spec.params:
        if p.per_model != per_model:
            continue
        value: Any = NO_MATCH
        for source in (raw, fallback or {}):
            if value is NO_MATCH and p.name in source:
                value = resolve_value(source[p.name], name, t, param=p.name)
        out[p.name] = p.default if value is NO_MATCH else p.coerce(value, where=name)
    return out


def unknown_keys(spec: MethodSpec, keys: Iterable[str]) -> list[str]:
    known = {p.name for p in spec.params}
    return [k for k in keys if k not in known]
