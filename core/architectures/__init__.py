"""Built-in model families and `resolve_architecture`, the one way to get a spec and a builder.

`arch` strings, as the CLI's `--arch` and the GUI's picker take them:

* None (or "" or "auto"): detect the family from the checkpoint's names and shapes, when
  exactly one fits;
* a family name, optionally with an option after a colon: `mlp`, `mlp:gelu`, `vgg`,
  `vgg:no-last-pool`, `resnet20`, `resnet18` (also `resnet34`), `resnet50` (also
  `resnet101`, `resnet152`);
* `path/to/model.py:factory`: import that file, call `factory()` for an `nn.Module`, load
  the checkpoint into it strictly, trace its spec with torch.fx and self-test it.

Families (details and parameter names in each module):

| name       | recognised by                                   | module            |
|------------|-------------------------------------------------|-------------------|
| `mlp`      | only 2-D `*.weight` (+ `*.bias`) forming a chain | mlp.py            |
| `vgg`      | `features.N` convs (+BN), `classifier.N` Linear  | vgg.py            |
| `resnet20` | `conv1`, `norm1`, `layerS.B.normK`, `shortcut`    | resnet_families.py |
| `resnet18` | torchvision names, basic blocks (ResNet-18/34)   | resnet_families.py |
| `resnet50` | torchvision names, bottlenecks (ResNet-50/101/152) | resnet_families.py |

Names that all carry one first part the readers did not drop (`model.` saved without
Lightning's marker, a `net.`; see `core.checkpoints.reader.shared_first_part`) are tried
without it when they fit no family as they are; the architecture then works on the
checkpoint's own names (`base.under_prefix`), and an error names the prefix.

`factories.py` writes random-init state dicts of each family at any size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch

from core.architectures import mlp, vgg
from core.architectures.base import (
    WHERE,
    Architecture,
    Family,
    Shapes,
    State,
    shapes_of,
    under_prefix,
)
from core.architectures.resnet_families import RESNET18, RESNET20, RESNET50
from core.checkpoints import open_checkpoint
from core.checkpoints.reader import shared_first_part
from core.errors import MergerError

_V = TypeVar("_V")

FAMILIES: dict[str, Family] = {
    family.name: family for family in (mlp.FAMILY, vgg.FAMILY, RESNET20, RESNET18, RESNET50)
}
# torchvision's other depths share their family's blocks and names
ALIASES = {"resnet34": "resnet18", "resnet101": "resnet50", "resnet152": "resnet50"}

__all__ = [
    "FAMILIES",
    "Architecture",
    "Family",
    "architecture_problem",
    "detect_family",
    "resolve_architecture",
]


def detect_family(shapes: Shapes) -> str:
    """The one family whose `fits` accepts these shapes; MergerError if none or several."""
    fitting = [name for name, family in FAMILIES.items() if family.fits(shapes) is None]
    if len(fitting) == 1:
        return fitting[0]
    if fitting:
        raise MergerError(
            f"the checkpoint fits several architectures: {', '.join(fitting)}",
            hint=f"pick one of {', '.join(fitting)} as the architecture {WHERE}",
        )
    _refuse_strays(shapes, FAMILIES)
    raise MergerError(
        f"no built-in architecture fits the checkpoint ({_misfit_reasons(shapes)})",
        hint=_NO_FIT_HINT,
    )


_NO_FIT_HINT = (
    f"name the architecture, or give your model's code as path/to/model.py:factory {WHERE}"
)


def _misfit_reasons(shapes: Shapes) -> str:
    """Each family's reason for not taking these shapes."""
    return "; ".join(f"{name}: {family.fits(shapes)}" for name, family in FAMILIES.items())


# Tensors left out to find a fitting family hold at most this share of the values.
_STRAY_FRACTION = 0.01
# Pairs of top-level names are tried as strays only up to this many names.
_STRAY_PAIRS_UP_TO = 24


def _refuse_strays(shapes: Shapes, families: Mapping[str, Family]) -> None:
    """Raise the error naming the tensors beside the network, if leaving them out makes
    exactly one of `families` fit; else return (the caller explains)."""
    stray = _fits_without_strays(shapes, families)
    if stray is None:
        return
    name, extra = stray
    consequence = (
        "no built-in architecture fits the whole checkpoint"
        if len(families) > 1
        else f"the '{name}' architecture has no such tensors"
    )
    raise MergerError(
        f"holds {_listed(extra)} beside a network that fits '{name}': {consequence}",
        hint=f"if {'that tensor is' if len(extra) == 1 else 'those tensors are'} not "
        "part of the network (a loss function's weights, a metric's state), save the "
        "network's weights alone, e.g. torch.save(module.model.state_dict(), 'net.pt') for "
        f"a LightningModule; or give your model's code as path/to/model.py:factory {WHERE}",
    )


def _fits_without_strays(
    shapes: Shapes, families: Mapping[str, Family]
) -> tuple[str, list[str]] | None:
    """The one family the checkpoint fits once the tensors under one or two top-level
    names are left out, and those tensors; None if no such family or several.

    Training checkpoints (Lightning's above all) carry modules beside the network, such as
    a weighted loss's `criterion.weight`; naming them beats five families' reasons."""
    prefixes = sorted({name.split(".", 1)[0] for name in shapes})
    if len(prefixes) < 2:
        return None
    total = sum(math.prod(shape) for shape in shapes.values())
    found: dict[str, list[str]] = {}
    # pairs only where they are few: P² fits, each reading every name, on the GUI thread
    sizes = (1, 2) if len(prefixes) <= _STRAY_PAIRS_UP_TO else (1,)
    for size in sizes:
        for dropped in itertools.combinations(prefixes, size):
            extra = [n for n in shapes if n.split(".", 1)[0] in dropped]
            if sum(math.prod(shapes[n]) for n in extra) > _STRAY_FRACTION * total:
                continue  # a part of the network, not a stray: its own reason says more
            rest = _without_common_prefix(
                {n: v for n, v in shapes.items() if n.split(".", 1)[0] not in dropped}
            )
            for name, family in families.items():
                if name not in found and family.fits(rest) is None:
                    found[name] = extra
        if found:
            break
    return next(iter(found.items())) if len(found) == 1 else None


def _without_common_prefix(shapes: Shapes) -> Shapes:
    """The names without a first part they all share (a wrapper's attribute, such as a
    LightningModule's `model.` beside its `criterion.`), else as they are."""
    part = shared_first_part(shapes)
    return _without(shapes, part) if part else shapes


def _without(named: Mapping[str, _V], prefix: str) -> dict[str, _V]:
    return {name.removeprefix(prefix): value for name, value in named.items()}


# How many nested shared parts are tried (`model.`, then `model.module.`...).
_PREFIX_LEVELS = 3


def _prefix_that_fits(arch: str | None, shapes: Shapes) -> str:
    """ "" if the names fit `arch` (or, for None, some family) as they are; else the
    shortest run of parts shared by every name (`model.`, `model.module.`) without which
    they fit; else "" too (the caller's error then names the shared part)."""
    if _fits(arch, shapes):
        return ""
    prefix = ""
    for _ in range(_PREFIX_LEVELS):
        part = shared_first_part(shapes)
        if part is None:
            break
        prefix, shapes = prefix + part, _without(shapes, part)
        if _fits(arch, shapes):
            return prefix
    return ""


def _fits(arch: str | None, shapes: Shapes) -> bool:
    if arch is None:
        return any(family.fits(shapes) is None for family in FAMILIES.values())
    return FAMILIES[_split(arch)[0]].fits(shapes) is None


def _naming_the_prefix(exc: MergerError, arch: str | None, shapes: Shapes) -> MergerError:
    """`exc`, a family's refusal of names that all carry one first part, said with that
    part and the reasons for the names without it (`model.conv1.weight` is not a ResNet
    name for any family; what `conv1.weight` lacks is the useful reason)."""
    part = shared_first_part(shapes)
    if part is None or _fits(arch, shapes):
        return exc  # not a misfit (several families fit, a variant that does not load)
    without = _without(shapes, part)
    shared = f"with or without the prefix '{part}' that every name carries"
    if arch is None:
        message = (
            f"no built-in architecture fits the checkpoint, {shared} (without it: "
            f"{_misfit_reasons(without)})"
        )
    else:
        name = _split(arch)[0]
        message = (
            f"the checkpoint is not a '{name}' model, {shared} (without it: "
            f"{FAMILIES[name].fits(without)})"
        )
    return MergerError(message, file=exc.file, hint=exc.hint)


def _listed(names: list[str], most: int = 3) -> str:
    quoted = [f"'{n}'" for n in names[:most]]
    if len(names) > most:
        return f"{', '.join(quoted)} and {len(names) - most} more"
    return " and ".join(quoted) if len(quoted) < 3 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def resolve_architecture(
    arch: str | None,
    state: State,
    *,
    allow_code: bool = True,
    need_spec: bool = True,
    source: str | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Architecture:
    """Spec (sizes filled in) and builder for `state`, from `arch` as described above.

    An empty `arch` or "auto" means the same as None: detect the family. With
    `allow_code=False` a `file.py:factory` reference is refused instead of imported (for
    `arch` values read from files the user did not type, such as downloaded recipes).
    With `need_spec=False` (evaluation) a user's model is built without tracing its spec,
    which is then empty. `source`, the checkpoint's file, is named in errors about it.
    `input_shape` (one example of the data at hand) shapes a user model's tracing input
    when its file does not say.
    """
    try:
        return _resolve(
            arch, state, allow_code=allow_code, need_spec=need_spec, input_shape=input_shape
        )
    except MergerError as exc:
        if exc.file is not None or source is None:
            raise
        raise MergerError(exc.message, file=source, tensor=exc.tensor, hint=exc.hint) from exc


def _resolve(
    arch: str | None,
    state: State,
    *,
    allow_code: bool,
    need_spec: bool,
    input_shape: tuple[int, ...] | None = None,
) -> Architecture:
    if arch is not None and arch.strip().lower() in ("", "auto"):
        arch = None
    if arch is not None and is_file_reference(arch):
        if not allow_code:
            raise MergerError(
                f"architecture '{arch}' would import and run that Python file",
                hint="if you trust that file, add --allow-code (or pick it yourself in the app)",
            )
        from core.architectures.custom import load_custom

        return load_custom(arch, state, trace=need_spec, input_shape=input_shape)
    shapes = shapes_of(state)
    prefix = _prefix_that_fits(arch, shapes)
    if prefix:  # a wrapper's attribute on every name: read the model without it
        return under_prefix(_resolve_family(arch, _without(state, prefix), input_shape), prefix)
    try:
        return _resolve_family(arch, state, input_shape)
    except MergerError as exc:
        raise _naming_the_prefix(exc, arch, shapes) from None


def _resolve_family(
    arch: str | None, state: State, input_shape: tuple[int, ...] | None
) -> Architecture:
    """A built-in family's architecture for `state` as it is named (None: detected)."""
    shapes = shapes_of(state)
    name, option = (detect_family(shapes), "") if arch is None else _split(arch)
    family = FAMILIES[name]
    reason = family.fits(shapes)
    if reason is not None:
        _refuse_strays(shapes, {name: family})
        raise MergerError(
            f"the checkpoint is not a '{name}' model: {reason}",
            hint="pick another architecture, leave it to be detected, or give the model's "
            f"code as path/to/model.py:factory {WHERE}",
        )
    chosen = bool(option)
    option = option or (family.options[0] if family.options else "")
    input_notes: list[str] = []
    if input_shape is not None and family.for_input is not None:
        option, input_notes = family.for_input(shapes, tuple(input_shape), option, chosen)
    spec = family.spec(shapes).infer_sizes(state)

    def build(weights: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        return family.build(weights, option)

    base = family.label(shapes) if family.label is not None else name
    label = f"{base}:{option}" if option and option != family.options[0] else base
    notes = []
    if arch is None:
        notes.append(
            f"architecture {label} detected from the tensor names and shapes: "
            f"{family.description}. A model with skip connections or other operations "
            f"needs its code: path/to/model.py:factory {WHERE}"
        )
    notes += input_notes
    return Architecture(
        label, spec, build, family.input_shape(shapes), notes, detected=arch is None
    )


def checkpoint_architecture_problem(arch: str | None, path: str | Path) -> str | None:
    """Why the model at `path` is not (or is not detected as) a built-in `arch`, from its
    names and shapes alone; None if it fits, for a user's model file (traced when run) and
    for a checkpoint that cannot be opened (its own error says why).

    So a form can say so before Merge, not after the weights are read."""
    if (arch and is_file_reference(arch)) or architecture_problem(arch):
        return None
    try:
        with open_checkpoint(path) as ckpt:
            state = {
                i.name: torch.empty(i.shape, dtype=i.dtype, device="meta") for i in ckpt.infos()
            }
    except MergerError:
        return None
    try:
        _resolve(arch, state, allow_code=False, need_spec=True)
    except MergerError as exc:
        return f"{exc.message} ({exc.hint})" if exc.hint else exc.message
    return None


def architecture_problem(arch: str | None) -> str | None:
    """What is wrong with an architecture name before any checkpoint is read (an unknown
    family or option, a .py without its function, a file that does not exist), or None.

    For forms that check as the user types; `resolve_architecture` checks again, with the
    checkpoint."""
    if arch is None or arch.strip().lower() in ("", "auto"):
        return None
    if is_file_reference(arch):
        path = Path(arch.strip().rpartition(":")[0]).expanduser()
        return None if path.is_file() else f"the model file {path} does not exist"
    try:
        _split(arch)
    except MergerError as exc:
        return f"{exc.message}: {exc.hint}" if exc.hint else exc.message
    return None


def is_file_reference(arch: str) -> bool:
    """Whether `arch` names a user's model file (`path/to/model.py:factory`), whose use
    imports and runs that file: the one test of it, for the code-consent checks and for
    what the data was used for."""
    path, sep, _ = arch.rpartition(":")
    return bool(sep) and (path.endswith(".py") or "/" in path or "\\" in path)


def _split(arch: str) -> tuple[str, str]:
    name, _, option = arch.strip().partition(":")
    if arch.strip().endswith(".py"):
        raise MergerError(
            f"architecture '{arch}' names a Python file but not the function in it that "
            "builds the model",
            hint=f"add the function's name after a colon: {arch.strip()}:make_model",
        )
    name = ALIASES.get(name.lower(), name.lower())
    if name not in FAMILIES:
        raise MergerError(
            f"unknown architecture '{arch}'",
            hint=f"use one of {', '.join([*FAMILIES, *ALIASES])} or path/to/model.py:factory",
        )
    family = FAMILIES[name]
    if option and option not in family.options:
        choices = ", ".join(family.options) or "none"
        raise MergerError(
            f"architecture '{name}' has no option '{option}'",
            hint=f"options: {choices}",
        )
    return name, option
