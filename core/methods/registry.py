"""The one table of merge methods, each with its parameter schema and what it needs.

The GUI builds its forms from `MethodSpec.params`, the CLI parses `--set key=value`
from the same schema, and `merger methods --json` prints it. Method modules are listed
explicitly in `core.methods.__init__`; there is no registration by import side effect.

Two kinds of method exist:

* ``tensorwise``: a pure function of one tensor name's inputs. The engine streams the
  models tensor by tensor through it, so models larger than RAM can be merged.
  Signature: ``fn(inputs, base, params, model_params, ctx) -> Tensor``.
* ``model``: needs whole models at once (alignment, continual merging, least squares).
  Signature: ``fn(ctx: ModelContext) -> dict[str, Tensor]``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import RecipeError

ParamType = Literal["float", "int", "bool", "choice", "str"]
MethodKind = Literal["tensorwise", "model"]


@dataclass(frozen=True)
class Param:
    """One parameter of a method: its type, default, range and help text.

    `per_model` parameters (mergekit's "tensor parameters", such as `weight` and
    `density`) may be set for each input model; `per_tensor` parameters may vary by
    tensor-name filter or as a gradient across layers.
    """

    name: str
    type: ParamType
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    per_model: bool = False
    per_tensor: bool = True
    label: str = ""

    def coerce(self, value: Any, *, where: str = "") -> Any:
        """Convert `value` to this parameter's type and check its range.

        Raises RecipeError naming the parameter and the accepted values.
        """
        prefix = f"{where}: " if where else ""
        try:
            if self.type == "bool":
                out = _to_bool(value)
            elif self.type == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                out = int(value)
            elif self.type == "float":
                if isinstance(value, bool):
                    raise ValueError
                out = float(value)
                if not math.isfinite(out):
                    raise ValueError
            elif self.type == "choice":
                out = str(value)
                if out not in self.choices:
                    raise RecipeError(
                        f"{prefix}parameter '{self.name}' must be one of "
                        f"{', '.join(self.choices)}, not '{value}'"
                    )
            else:
                out = str(value)
        except (TypeError, ValueError):
            raise RecipeError(
                f"{prefix}parameter '{self.name}' must be a {self.type}, not {value!r}"
            ) from None
        if self.type in ("int", "float"):
            if self.min is not None and out < self.min:
                raise RecipeError(f"{prefix}parameter '{self.name}' = {out} is below {self.min}")
            if self.max is not None and out > self.max:
                raise RecipeError(f"{prefix}parameter '{self.name}' = {out} is above {self.max}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name.replace("_", " ").capitalize(),
            "type": self.type,
            "default": self.default,
            "min": self.min,
            "max": self.max,
            "choices": list(self.choices),
            "per_model": self.per_model,
            "per_tensor": self.per_tensor,
            "help": self.help,
        }


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
        return False
    raise ValueError(value)


@dataclass(frozen=True)
class Needs:
    """What a method requires besides its input models."""

    base: bool = False
    data: bool = False
    # Data that is optional but used when given (e.g. BatchNorm re-estimation).
    uses_data: bool = False
    arch: bool = False
    # Draws random numbers: the recipe's seed matters.
    random: bool = False
    min_models: int = 1
    max_models: int | None = None
    # For methods with a base: does the base also count as an input when listed in
    # `models`? (mergekit's `linear` averages every listed model; the task-vector family
    # skips the base, whose task vector would be zero.)
    base_is_input: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "data": self.data,
            "uses_data": self.uses_data or self.data,
            "arch": self.arch,
            "random": self.random,
            "min_models": self.min_models,
            "max_models": self.max_models,
        }


@dataclass(frozen=True)
class MethodSpec:
    """A merge method: identity, schema, requirements and the function doing the work."""

    name: str
    label: str
    description: str
    kind: MethodKind
    fn: Callable[..., Any]
    params: tuple[Param, ...] = ()
    needs: Needs = field(default_factory=Needs)
    reference_url: str = ""
    aliases: tuple[str, ...] = ()
    # Checks the typed parameters (global, then one dict per input model) before any
    # tensor is read; called only when no value varies by tensor or layer (those are
    # checked again by `fn` for each tensor). Raises RecipeError.
    check_params: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None
    # Tensorwise methods: a pass over the whole model before the merge streams, for what
    # one tensor cannot tell (TIES's model-wide trim threshold). Gets a `PrepareContext`
    # and returns one dict of extra per-model parameters per input model, or None when
    # these parameters need no such pass.
    prepare: Callable[[Any], list[dict[str, Any]] | None] | None = None
    # How many passes over the model `prepare` makes for these settings (it gets the same
    # `PrepareContext`): one progress bar then spans them and the merge, instead of
    # restarting at 0 for each. None: one pass whenever `prepare` runs.
    prepare_passes: Callable[[Any], int] | None = None

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise RecipeError(
            f"method '{self.name}' has no parameter '{name}'"
            + (f"; it takes {', '.join(p.name for p in self.params)}" if self.params else "")
        )

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "description": self.description,
            "reference_url": self.reference_url,
            "aliases": list(self.aliases),
            "needs": self.needs.to_json(),
            "params": [p.to_json() for p in self.params],
        }


class Registry:
    """Name → MethodSpec, with aliases and a helpful error for unknown names."""

    def __init__(self, specs: Sequence[MethodSpec]) -> None:
        self._specs: dict[str, MethodSpec] = {}
        self._aliases: dict[str, str] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"duplicate method {spec.name}")
            self._specs[spec.name] = spec
            for alias in spec.aliases:
                self._aliases[alias] = spec.name

    def get(self, name: str) -> MethodSpec:
        key = self._aliases.get(name, name)
        if key not in self._specs:
            close = difflib.get_close_matches(str(name).lower(), [*self._specs, *self._aliases], 1)
            guess = f"did you mean '{self._aliases.get(close[0], close[0])}'? " if close else ""
            raise RecipeError(
                f"unknown merge method '{name}'; {guess}available: {', '.join(self._specs)}"
            )
        return self._specs[key]

    def __iter__(self):
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)
