"""`--arch path/to/model.py:factory`: the user's own nn.Module, spec traced with torch.fx.

The file is imported (it is the user's own code, run on their request), `factory()` must
return an `nn.Module`, the checkpoint must load into it strictly, and the traced spec
must pass the self-test before anything uses it: a wrong spec would silently produce a
broken merge, so we refuse instead.

The example input used for tracing comes from, in order: an `example_input` attribute
of the model, a module-level `example_input` in the file (a tensor, or a function
returning one), the shape of the data it will run on (when there is data), or a guess
from the first layer (Linear → (2, in_features); Conv2d →
(2, in_channels, 32, 32)). A guessed shape is not claimed as the model's input shape,
and an error while tracing with it says that it was a guess.

The file's own folder is importable while it loads and while its factory runs, so a
model file can import its neighbours (`from nets import MyNet`), as when run as a script.

Evaluation needs only the module: `load_custom(..., trace=False)` builds and loads it
without tracing a spec (a model may well run on data but be beyond the tracer).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from core.alignment.spec import PermutationSpec
from core.alignment.tracing import trace_spec
from core.architectures.base import Architecture, State, load_mismatch
from core.checkpoints.reader import WRAPPER_PREFIXES
from core.errors import MergerError


def load_custom(
    arch: str,
    state: State,
    *,
    trace: bool = True,
    input_shape: tuple[int, ...] | None = None,
) -> Architecture:
    """Resolve `path.py:factory` against `state`: build, load, trace and self-test.

    With `trace=False` the spec is left empty (for evaluation, which only builds).
    `input_shape`, one example's shape in the data the model will see, shapes the
    tracing input where the file does not define one."""
    path_text, _, factory_name = arch.rpartition(":")
    path = Path(path_text).expanduser()
    with _importable_folder(path.parent):
        module = _import(path)
        model = _call_factory(module, factory_name, path)
    prefix = _wrapper_prefix(model, state)
    full = {f"{prefix}{k}": v for k, v in state.items()} if prefix else state
    _load_strict(model, full, path)
    example, source = _example_input(module, model, path, input_shape)
    guessed = source == "guess"
    spec = PermutationSpec({})
    notes = []  # evaluation only builds the model: nothing about a spec to tell
    if prefix:
        notes.append(
            f"the model's names carry '{prefix}', which the checkpoint's were read "
            "without: weights are loaded into it with the prefix"
        )
    if trace:
        spec = _traced_spec(model, full, example, source, path)
        if prefix:
            spec = spec.renamed(lambda name: name.removeprefix(prefix))
        notes.append(f"spec traced with torch.fx: {len(spec.groups)} permutation groups")
    template = copy.deepcopy(model)
    if prefix:
        _names_without(template, prefix)

    def build(weights: Mapping[str, torch.Tensor]) -> nn.Module:
        net = copy.deepcopy(template)
        _load_strict(net, weights, path)
        return net.eval()

    return Architecture(
        name=f"{path.name}:{factory_name}",
        spec=spec,
        build=build,
        # a guess is the input shape once the model has run on it (traced and self-tested)
        input_shape=None if guessed and not trace else tuple(example.shape[1:]),
        notes=notes,
    )


def _traced_spec(
    model: nn.Module, state: State, example: torch.Tensor, source: str, path: Path
) -> PermutationSpec:
    """The traced, self-tested spec; its errors say where the input's shape came from
    (`source`: "file", "data" or "guess") when the shape may be what is wrong."""
    try:
        spec = trace_spec(model, example).infer_sizes(state)
        spec.self_test(model, state, example)
    except MergerError as exc:
        ties = _tied(model)
        if ties and "changes the outputs" in exc.message:
            hint = (
                f"{ties} are one tensor (tied weights): each name's units are permuted on "
                "their own, which unties them; a permutation spec cannot follow ties "
                "between layers"
            )
        elif source == "file" or not _about_shapes(exc.message):
            # an unsupported operation: the input's shape has nothing to do with it, and
            # the model's file (not the checkpoint) is where to look
            hint = exc.hint
        elif source == "data":
            hint = (
                f"the shape {list(example.shape[1:])} is the data's examples'; if the model "
                "takes another (images N×C×H×W where the data is flat, e.g. digits: "
                "x.reshape(-1, 1, 8, 8)), give data shaped for it, or define "
                f"example_input = torch.randn(2, ...) in {path.name}"
            )
        else:
            hint = (
                f"the input shape {list(example.shape)} was guessed from the model's first "
                "layer; if the model takes another, define example_input = "
                f"torch.randn(2, ...) in {path.name}"
            )
        raise MergerError(exc.message, file=exc.file or path, tensor=exc.tensor, hint=hint) from exc
    return spec


def _tied(model: nn.Module) -> str:
    """The model's parameters shared under several names, as "a.weight and b.weight"."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return "; ".join(" and ".join(group) for group in names.values() if len(group) > 1)


def _about_shapes(message: str) -> bool:
    """Whether a tracing error involves the example input or a shape ([2, 1, 32, 32])."""
    return "example input" in message or re.search(r"\[\d+(, \d+)*\]", message) is not None


@contextlib.contextmanager
def _importable_folder(folder: Path) -> Iterator[None]:
    """Put the model file's folder first on sys.path while its code runs."""
    entry = str(folder.resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _import(path: Path) -> ModuleType:
    if not path.is_file():
        raise MergerError(
            "no such model file", file=path, hint="check the path in path/to/model.py:factory"
        )
    name = f"merger_user_model_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise MergerError("cannot import it as Python", file=path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's code may raise anything, even exit
        sys.modules.pop(name, None)
        raise MergerError(f"importing it failed: {type(exc).__name__}: {exc}", file=path) from exc
    return module


def _call_factory(module: ModuleType, name: str, path: Path) -> nn.Module:
    factory = getattr(module, name, None)
    if not callable(factory):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise MergerError(
            f"it has no function '{name}'",
            file=path,
            hint=f"callables in the file: {', '.join(names) or 'none'}",
        )
    try:
        model = factory()
    except (Exception, SystemExit) as exc:  # a script's sys.exit() must not end merger
        arguments = isinstance(exc, TypeError) and "required" in str(exc) and "argument" in str(exc)
        raise MergerError(
            f"{name}() failed: {type(exc).__name__}: {exc}",
            file=path,
            hint=f"the factory is called with no arguments: add one to {path.name} that is, "
            f"e.g. def make_model(): return {name}(...) with your values"
            if arguments
            else None,
        ) from exc
    if not isinstance(model, nn.Module):
        raise MergerError(
            f"{name}() returned {type(model).__name__}, not a torch.nn.Module", file=path
        )
    return model.eval()


def _wrapper_prefix(model: nn.Module, state: State) -> str:
    """The prefix the model's own names add to every checkpoint name (a model whose one
    child is called `module`, a DataParallel or torch.compile wrapper: checkpoints are
    read without such a prefix, see `strip_wrapper_prefixes`), or ""."""
    names = set(model.state_dict())
    if not state or names == set(state):
        return ""
    # the wrappers' prefixes alone and nested, and a LightningModule's `model.`
    for prefix in (*WRAPPER_PREFIXES, "".join(WRAPPER_PREFIXES), "model."):
        if names == {f"{prefix}{k}" for k in state}:
            return prefix
    return ""


def _names_without(model: nn.Module, prefix: str) -> None:
    """Make the model's state dict use the checkpoint's names, without `prefix`, both
    ways: built models are loaded, permuted, re-loaded (the self-test) and read back
    (BatchNorm statistics) under the names the rest of the engine uses."""

    def add(module, state_dict, at, *_args) -> None:
        for key in [k for k in state_dict if k.startswith(at) and not k.startswith(at + prefix)]:
            state_dict[at + prefix + key[len(at) :]] = state_dict.pop(key)

    def strip(module, state_dict, at, _metadata) -> None:
        for key in [k for k in state_dict if k.startswith(at + prefix)]:
            state_dict[at + key[len(at + prefix) :]] = state_dict.pop(key)

    model.register_load_state_dict_pre_hook(add)
    model.register_state_dict_post_hook(strip)


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise MergerError(
            f"the checkpoint does not load into the model: {load_mismatch(model, state, exc)}",
            file=path,
            hint="the factory must build exactly the architecture that wrote the checkpoint",
        ) from exc


def _example_input(
    module: ModuleType, model: nn.Module, path: Path, data_shape: tuple[int, ...] | None
) -> tuple[torch.Tensor, str]:
    """The example input for tracing, and where it came from: "file", "data", or "guess"
    (from the first layer).

    The file's own `example_input` comes first, then the shape of the data the model is
    about to see (a model that reshapes flat inputs itself takes them as they are)."""
    given = getattr(model, "example_input", None)
    if given is None:
        given = getattr(module, "example_input", None)
    if callable(given):
        given = given()
    if given is not None:
        if not torch.is_tensor(given):
            raise MergerError("example_input must be a tensor (with a batch dim)", file=path)
        return given, "file"
    if data_shape is not None:
        return torch.randn(2, *data_shape), "data"
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            return torch.randn(2, layer.in_features), "guess"
        if isinstance(layer, nn.Conv2d):
            return torch.randn(2, layer.in_channels, 32, 32), "guess"
        if isinstance(layer, nn.Conv1d):
            return torch.randn(2, layer.in_channels, 32), "guess"
    raise MergerError(
        "cannot guess the model's input shape",
        file=path,
        hint="define example_input = torch.randn(2, ...) in the file",
    )


def guess_factory(path: str | Path) -> str | None:
    """The function in a model file most likely to build the model, read without running
    the file (its syntax tree): the only top-level function, or the first whose name says
    so (make_/build_/create_/get_ or 'model'); None when there is no function or the
    file cannot be read. For pickers that fill in `file.py:function`."""
    import ast

    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    names = [
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and not n.name.startswith("_")
    ]
    if len(names) <= 1:
        return names[0] if names else None
    hinted = [n for n in names if n.startswith(("make", "build", "create", "get_")) or "model" in n]
    return (hinted or names)[0]
