"""What a model family is, and what resolving an architecture gives back.

A `Family` knows one kind of network well enough to rebuild it from a state dict alone:
it decides from names and shapes whether a checkpoint is one of its own (`fits`), writes
the permutation spec, and builds an `nn.Module` whose `state_dict()` keys are exactly the
checkpoint's, with the weights loaded. Everything is inferred from shapes so that a
checkpoint file is enough: no config, no torchvision.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from core.alignment.spec import PermutationSpec
from core.errors import MergerError

Shapes = Mapping[str, tuple[int, ...]]
State = Mapping[str, torch.Tensor]
# Where users name an architecture, for hints that both fronts show.
WHERE = "(Architecture in the window, --arch on the command line)"


@dataclass(frozen=True)
class Architecture:
    """A resolved architecture: its spec (sizes filled in) and a builder for loaded modules."""

    name: str
    spec: PermutationSpec
    build: Callable[[State], nn.Module]
    input_shape: tuple[int, ...] | None = None
    notes: list[str] = field(default_factory=list)
    # Chosen from the checkpoint's names and shapes, not by the user: a guess about the
    # forward pass (skip connections leave no trace in a state dict), to be said as such.
    detected: bool = False

    def example_input(self, batch: int = 2, seed: int = 0) -> torch.Tensor | None:
        """A random batch of the model's input shape, or None if the shape is unknown."""
        if self.input_shape is None:
            return None
        gen = torch.Generator().manual_seed(seed)
        return torch.randn((batch, *self.input_shape), generator=gen)

    def self_test(self, state: State, seed: int = 0) -> float:
        """`spec.self_test` with this architecture's builder and a random example input."""
        example = self.example_input(seed=seed)
        if example is None:
            raise MergerError(
                f"architecture '{self.name}' does not know its input shape",
                hint="call spec.self_test with an example input",
            )
        return self.spec.self_test(self.build, state, example, seed)


@dataclass(frozen=True)
class Family:
    """A built-in model family.

    `fits(shapes)` returns None when the checkpoint is one of this family's, otherwise a
    short reason why not (shown when nothing fits). `options` are the words accepted
    after a colon, as in `mlp:gelu`; the first is the default. `label(shapes)` names the
    model more precisely than the family where it can (a torchvision ResNet's depth).
    `for_input(shapes, input_shape, option, chosen)` lets the data's example shape settle
    what the weights cannot show (whether a VGG pools after its last conv): it returns
    the option to use and notes to tell the user; `chosen` says the user named the option.
    """

    name: str
    description: str
    fits: Callable[[Shapes], str | None]
    spec: Callable[[Shapes], PermutationSpec]
    build: Callable[[State, str], nn.Module]
    input_shape: Callable[[Shapes], tuple[int, ...] | None]
    options: tuple[str, ...] = ()
    label: Callable[[Shapes], str] | None = None
    for_input: Callable[[Shapes, tuple[int, ...], str, bool], tuple[str, list[str]]] | None = None


def under_prefix(arch: Architecture, prefix: str) -> Architecture:
    """`arch`, resolved for names without `prefix` (`model.`), made to work on the
    checkpoint's own names: its spec names the prefixed tensors, and its builder puts
    the family's model at that path in an empty parent, so the built model's state dict
    has exactly the checkpoint's names (loading, permuting and reading back BatchNorm
    statistics need no renaming anywhere else, and outputs keep the file's names)."""
    path = prefix.removesuffix(".")

    def build(weights: State) -> nn.Module:
        inner = arch.build({name.removeprefix(prefix): value for name, value in weights.items()})
        return _Under(path, inner).eval()

    spec = arch.spec.renamed(lambda name: prefix + name)
    modules = {g: [f"{path}.{m}" if m else path for m in ms] for g, ms in spec.activations.items()}
    return dataclasses.replace(
        arch,
        spec=dataclasses.replace(spec, activations=modules),
        build=build,
        notes=[
            *arch.notes,
            f"every name carries the prefix '{prefix}' (a wrapper's, such as a "
            f"LightningModule's self.{path.split('.')[0]}), and the names without it fit "
            f"{arch.name}: the model is read as that; outputs keep the names as they are",
        ],
    )


class _Under(nn.Module):
    """A model at a dotted path inside an otherwise empty module, which runs it."""

    def __init__(self, path: str, inner: nn.Module) -> None:
        super().__init__()
        self._path = path
        attach(self, path, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.get_submodule(self._path)(x)


def shapes_of(state: State) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a state dict (what detection and specs need)."""
    return {name: tuple(int(n) for n in value.shape) for name, value in state.items()}


def natural_key(name: str) -> list[object]:
    """Sort key that orders 'layers.2' before 'layers.10' (safetensors sorts names as text)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def attach(root: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Register `module` at dotted `path` under `root`, creating empty containers between.

    This is how builders reproduce any checkpoint's naming (`fc1`, `net.0`, plain `0`)
    without knowing the class that wrote it.
    """
    parent = root
    *heads, last = path.split(".")
    for head in heads:
        child = parent._modules.get(head)
        if child is None:
            child = nn.Module()
            parent.add_module(head, child)
        parent = child
    parent.add_module(last, module)
    return module


def load_exact(module: nn.Module, state: State, family: str) -> nn.Module:
    """Load `state` strictly into the module built from its own shapes.

    A mismatch means the checkpoint has a variant the builder does not know (say, a
    BatchNorm without running statistics); say so instead of showing torch's message.
    """
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise MergerError(
            f"the checkpoint does not load into the '{family}' model rebuilt from its "
            f"shapes: {load_mismatch(module, state, exc)}",
            hint="this variant is not supported by the built-in family; "
            "give the model as --arch path/to/model.py:factory",
        ) from exc
    return module.eval()


def load_mismatch(module: nn.Module, state: State, exc: RuntimeError, shown: int = 3) -> str:
    """What `load_state_dict` objected to, short: the missing and unexpected names (a few,
    then a count; torch lists them all on one line), or its first complaint otherwise."""
    own = set(module.state_dict())
    missing = sorted(own - set(state), key=natural_key)
    unexpected = sorted(set(state) - own, key=natural_key)

    def names(found: list[str]) -> str:
        more = f", … and {len(found) - shown} more" if len(found) > shown else ""
        return ", ".join(found[:shown]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) the model has are missing ({names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} are not in the model ({names(unexpected)})")
    if parts:
        return "; ".join(parts)
    detail = str(exc).split("\n\t", 2)[1:2] or [str(exc)]
    return detail[0].strip()
