"""Build a PermutationSpec for any nn.Module by tracing it with torch.fx.

Every tensor axis that must share one permutation is put in one set of a union-find:
the feature axis (dim 1) of each activation in the graph, and each (parameter, axis).
A Linear or Conv joins its input's feature axis with its weight's input axis and starts a
new feature axis at its weight's output axis (with the bias); norms join their
parameters to the feature axis; elementwise ops and pooling pass the feature axis
through; a residual add (or any elementwise binary op) joins both operands' axes.
The network's input and output axes are fixed: a set holding either is not permuted.
Each remaining set is one permutation group.

Flatten after a conv turns C channels into C·S features; the feature axis then carries a
block size S (recorded in `PermutationSpec.blocks`), found by running the example input
through the graph (`ShapeProp`). Anything we do not understand (concatenation,
transposes, attention, parameters used directly, grouped convs) is refused with an error
naming the op and the node, rather than guessed.
"""

from __future__ import annotations

import contextlib
import io
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import prod

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F  # noqa: N812

from core.alignment.spec import PermutationSpec
from core.architectures.resnet import ChannelLayerNorm
from core.errors import MergerError

ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid,
    nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Identity,
)  # fmt: skip
ELEMENTWISE_FUNCTIONS = {
    torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu,
    F.mish, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.hardtanh, F.hardswish,
    F.hardsigmoid, F.softplus, F.softsign, F.logsigmoid, F.dropout,
    torch.nn.functional.dropout2d, torch.exp, torch.abs, torch.neg, operator.neg,
    torch.clamp, torch.clip, torch.sqrt, torch.rsqrt, torch.square, torch.log, torch.log1p,
    torch.expm1, torch.sin, torch.cos, torch.erf,
}  # fmt: skip
ELEMENTWISE_METHODS = {
    "relu", "relu_", "tanh", "sigmoid", "exp", "abs", "neg", "contiguous", "clone",
    "clamp", "clamp_", "clip", "clamp_min", "clamp_max", "sqrt", "rsqrt", "square", "log",
    "log1p", "float", "double", "half", "bfloat16", "to", "detach",
}  # fmt: skip
RESHAPE_METHODS = {"view", "reshape", "squeeze"}
POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
POOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
}  # fmt: skip
_NOT_ACTIVATIONS = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
BINARY_FUNCTIONS = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.pow, torch.add, torch.sub, torch.mul, torch.div, torch.pow,
    torch.maximum, torch.minimum,
}  # fmt: skip
BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "pow"}
SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
_BN_LEAVES = ("weight", "bias", "running_mean", "running_var")

Key = tuple[str, int] | str  # a (tensor, axis) or an activation node's feature axis


@dataclass
class _UnionFind:
    parent: dict[Key, Key] = field(default_factory=dict)

    def find(self, key: Key) -> Key:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: Key, b: Key) -> None:
        self.parent[self.find(a)] = self.find(b)


@dataclass
class _Feature:
    """The feature axis (dim 1) of one activation: its union-find key and block size."""

    key: Key
    block: int = 1


class _Tracer:
    def __init__(self, module: nn.Module, graph: fx.GraphModule) -> None:
        self.module = module
        self.graph = graph
        self.uf = _UnionFind()
        self.features: dict[fx.Node, _Feature] = {}
        self.blocks: dict[tuple[str, int], int] = {}
        self.fixed: list[Key] = []
        self.activation_modules: list[tuple[str, Key]] = []

    # -- helpers ----------------------------------------------------------------
    def refuse(self, node: fx.Node, what: str, why: str) -> MergerError:
        return MergerError(
            f"cannot build a permutation spec through {what} (graph node '{node.name}'): {why}",
            hint="use a built-in family, or a model made of Linear/Conv/norm/pooling/"
            "elementwise layers and residual adds",
        )

    def describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"{type(self.module.get_submodule(str(node.target))).__name__} '{node.target}'"
        if node.op == "call_method":
            return f"method .{node.target}()"
        return f"function {getattr(node.target, '__name__', node.target)}"

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def feature(self, node: fx.Node, arg: object, what: str) -> _Feature:
        if not isinstance(arg, fx.Node) or arg not in self.features:
            raise self.refuse(node, what, "its input is not a traced activation")
        return self.features[arg]

    def attach(self, feature: _Feature, tensor: str, axis: int, node: fx.Node) -> None:
        key = (tensor, axis)
        known = self.blocks.get(key, feature.block)
        if known != feature.block:
            raise self.refuse(node, tensor, "the same weight sees differently flattened inputs")
        if feature.block > 1:
            self.blocks[key] = feature.block
        self.uf.union(key, feature.key)

    def params(self, target: str, leaves: Iterable[str]) -> list[str]:
        """Full names of the module's tensors among `leaves` that exist in its state dict."""
        sub = self.module.get_submodule(target)
        own = dict(sub.named_parameters(recurse=False)) | dict(sub.named_buffers(recurse=False))
        return [f"{target}.{leaf}" for leaf in leaves if own.get(leaf) is not None]

    def check_no_other_state(self, node: fx.Node, target: str, handled: Iterable[str]) -> None:
        sub = self.module.get_submodule(target)
        names = {n for n, _ in sub.named_parameters()} | {n for n, _ in sub.named_buffers()}
        extra = sorted(names - set(handled) - {"num_batches_tracked"})
        if extra:
            raise self.refuse(node, type(sub).__name__, f"it holds unexpected tensors {extra}")

    # -- the walk ---------------------------------------------------------------
    def run(self) -> PermutationSpec:
        for node in self.graph.graph.nodes:
            if node.op == "placeholder":
                self.features[node] = _Feature(node.name)
                self.fixed.append(node.name)
            elif node.op == "output":
                for arg in _flat(node.args):
                    if isinstance(arg, fx.Node) and arg in self.features:
                        self.fixed.append(self.features[arg].key)
            elif node.op == "get_attr":
                kind = "buffer" if node.target in dict(self.module.named_buffers()) else "parameter"
                raise self.refuse(node, f"{kind} '{node.target}'", "it is used directly")
            elif self.shape(node) is None:
                self.non_tensor(node)
            elif node.op == "call_module":
                self.call_module(node)
            elif node.op == "call_function":
                self.call_function(node)
            elif node.op == "call_method":
                self.call_method(node)
        return self.groups()

    def non_tensor(self, node: fx.Node) -> None:
        """Sizes and shapes (`x.size(0)`, `x.shape[0]`) are fine; anything else without a
        tensor result is not."""
        if node.op == "call_method" and node.target in ("size", "dim"):
            return
        if node.op == "call_function" and node.target is getattr:
            return
        if node.op == "call_function" and node.target is operator.getitem:
            source = node.args[0]
            if isinstance(source, fx.Node) and source not in self.features:
                return  # indexing a shape or a size, not an activation
        raise self.refuse(node, self.describe(node), "not supported: its result is not one tensor")

    def call_module(self, node: fx.Node) -> None:
        target = str(node.target)
        sub = self.module.get_submodule(target)
        what = f"{type(sub).__name__} '{target}'"
        src = self.feature(node, node.args[0] if node.args else None, what)
        if isinstance(sub, nn.Linear):
            self.dense(node, target, src, what)
        elif isinstance(sub, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            self.conv(node, sub, target, src, what)
        elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
            self.norm(node, target, src, _BN_LEAVES)
        elif isinstance(sub, ChannelLayerNorm):
            self.norm(node, target, src, ("weight", "bias"))
        elif isinstance(sub, nn.LayerNorm):
            shape = self.shape(node) or ()
            if len(shape) != 2 or tuple(sub.normalized_shape) != shape[1:]:
                raise self.refuse(node, what, "only LayerNorm over the features of (N, F) inputs")
            self.norm(node, target, src, ("weight", "bias"))
        elif isinstance(sub, nn.GroupNorm):
            if sub.num_groups not in (1, sub.num_channels):
                raise self.refuse(node, what, "groups other than 1 or one per channel mix units")
            self.norm(node, target, src, ("weight", "bias"))
        elif isinstance(sub, ELEMENTWISE_MODULES + POOL_MODULES):
            self.check_no_other_state(node, target, ())
            self.pass_through(node, src, what)
            if isinstance(sub, ELEMENTWISE_MODULES) and not isinstance(sub, _NOT_ACTIVATIONS):
                self.activation_modules.append((target, src.key))
        elif isinstance(sub, nn.Flatten | nn.Unflatten):
            self.reshape(node, src, what)
        elif isinstance(sub, nn.Softmax | nn.LogSoftmax):
            self.softmax(node, src, sub.dim, what)
        else:
            raise self.refuse(node, what, "this layer type is not supported")

    def dense(self, node: fx.Node, target: str, src: _Feature, what: str) -> None:
        if len(self.shape(node) or ()) != 2:
            raise self.refuse(node, what, "only Linear layers on (N, F) inputs")
        self.check_no_other_state(node, target, ("weight", "bias"))
        self.attach(src, f"{target}.weight", 1, node)
        self.new_feature(node, target, ("weight", "bias"))

    def conv(self, node: fx.Node, sub: nn.Module, target: str, src: _Feature, what: str) -> None:
        if src.block != 1:
            raise self.refuse(node, what, "its input was flattened")
        self.check_no_other_state(node, target, ("weight", "bias"))
        if sub.groups == 1:
            self.attach(src, f"{target}.weight", 1, node)
            self.new_feature(node, target, ("weight", "bias"))
        elif sub.groups == sub.in_channels == sub.out_channels:  # depthwise: channel i → i
            for name in self.params(target, ("weight", "bias")):
                self.attach(src, name, 0, node)
            self.features[node] = _Feature(src.key)
        else:
            raise self.refuse(node, what, f"grouped convolution (groups={sub.groups})")

    def new_feature(self, node: fx.Node, target: str, leaves: Iterable[str]) -> None:
        names = self.params(target, leaves)
        key = (names[0], 0)
        for name in names[1:]:
            self.uf.union((name, 0), key)
        self.features[node] = _Feature(key)

    def norm(self, node: fx.Node, target: str, src: _Feature, leaves: tuple[str, ...]) -> None:
        self.check_no_other_state(node, target, leaves)
        for name in self.params(target, leaves):
            self.attach(src, name, 0, node)
        self.features[node] = _Feature(src.key, src.block)

    def pass_through(self, node: fx.Node, src: _Feature, what: str) -> None:
        shape = self.shape(node) or ()
        if src.block != 1 and len(shape) != 2:
            raise self.refuse(node, what, "it acts on a flattened feature axis")
        self.features[node] = _Feature(src.key, src.block)

    def softmax(self, node: fx.Node, src: _Feature, dim: object, what: str) -> None:
        ndim = len(self.shape(node) or ())
        if dim not in (1, -1) or (dim == -1 and ndim != 2):
            raise self.refuse(node, what, "softmax over an axis other than the features")
        self.features[node] = _Feature(src.key, src.block)

    def reshape(self, node: fx.Node, src: _Feature, what: str) -> None:
        """Flatten (N, C, *S) to (N, C·|S|): the feature axis keeps its key, block × |S|.

        Reshapes that keep (N, C) and only regroup the trailing dims (squeeze after a
        global pool) keep the feature axis as it is. A tensor still derived from the
        network's input alone (its axes are never permuted) may be reshaped freely as
        long as the batch stays, as models that take flat vectors and view them as images
        do. Any other reshape is refused.
        """
        before = self.shape(node.args[0]) if isinstance(node.args[0], fx.Node) else None
        after = self.shape(node)
        if before is None or after is None:
            raise self.refuse(node, what, "the shapes are unknown")
        same_batch = len(before) >= 2 and len(after) >= 2 and after[0] == before[0]
        spatial = prod(before[2:])
        if after and before and after[0] == before[0] and self.is_input(src):
            self.features[node] = _Feature(src.key)
        elif same_batch and after[1] == before[1] and prod(after[2:]) == spatial:
            self.features[node] = _Feature(src.key, src.block)  # only trailing dims change
        elif same_batch and len(after) == 2 and after[1] == before[1] * spatial:
            self.features[node] = _Feature(src.key, src.block * spatial)
        else:
            raise self.refuse(node, what, f"a reshape from {list(before)} to {list(after)}")

    def is_input(self, feature: _Feature) -> bool:
        """Whether this feature axis is (so far) the network input's, which is never permuted."""
        root = self.uf.find(feature.key)
        return any(self.uf.find(k) == root for k in self.fixed)

    def call_function(self, node: fx.Node) -> None:
        fn = node.target
        what = getattr(fn, "__name__", str(fn))
        if fn in BINARY_FUNCTIONS:
            self.binary(node, what)
        elif fn in ELEMENTWISE_FUNCTIONS or fn in POOL_FUNCTIONS:
            self.pass_through(node, self.feature(node, node.args[0], what), what)
        elif fn in (torch.squeeze, torch.reshape):
            self.reshape(node, self.feature(node, node.args[0], what), what)
        elif fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1:
                raise self.refuse(node, what, "only flatten from dim 1 keeps the batch")
            self.reshape(node, self.feature(node, node.args[0], what), what)
        elif fn in (torch.mean, torch.sum, torch.amax):
            self.reduce(node, what)
        elif fn in SOFTMAX:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            self.softmax(node, self.feature(node, node.args[0], what), dim, what)
        else:
            self.on_input_only(node, f"function {what}")

    def call_method(self, node: fx.Node) -> None:
        name = str(node.target)
        what = f"method .{name}()"
        if name in BINARY_METHODS:
            self.binary(node, what)
        elif name in ELEMENTWISE_METHODS:
            self.pass_through(node, self.feature(node, node.args[0], what), what)
        elif name in RESHAPE_METHODS or name == "flatten":
            if name == "flatten" and (node.args[1:2] or (node.kwargs.get("start_dim", 0),)) != (1,):
                raise self.refuse(node, what, "only flatten from dim 1 keeps the batch")
            self.reshape(node, self.feature(node, node.args[0], what), what)
        elif name in ("mean", "sum", "amax"):
            self.reduce(node, what)
        elif name in ("softmax", "log_softmax"):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            self.softmax(node, self.feature(node, node.args[0], what), dim, what)
        else:
            self.on_input_only(node, what)

    def on_input_only(self, node: fx.Node, what: str) -> None:
        """An op we do not model may still read only tensors derived from the network's
        input, whose axes are never permuted (preprocessing in forward: x.unsqueeze(1),
        x.round(), x[:, None]); its result is input-derived too. Anything else is refused."""
        sources = node.all_input_nodes
        if sources and all(s in self.features and self.is_input(self.features[s]) for s in sources):
            self.features[node] = _Feature(self.features[sources[0]].key)
            return
        raise self.refuse(
            node, what, "this operation is not supported after the first permuted layer"
        )

    def reduce(self, node: fx.Node, what: str) -> None:
        """Mean/sum/max over spatial dims (global pooling) keeps the channel axis."""
        src = self.feature(node, node.args[0], what)
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else dims
        ndim = len(self.shape(node.args[0]) or ())
        if dims is None or any(d % ndim in (0, 1) for d in dims) or src.block != 1:
            raise self.refuse(node, what, "a reduction over the batch or the features")
        self.features[node] = _Feature(src.key)

    def binary(self, node: fx.Node, what: str) -> None:
        """Elementwise ops of two activations join their feature axes (residual adds)."""
        tensors = [a for a in node.args if isinstance(a, fx.Node) and self.shape(a) is not None]
        feats = [self.feature(node, a, what) for a in tensors]
        if not feats:
            raise self.refuse(node, what, "it has no traced tensor operand")
        out_shape = self.shape(node)
        for a, f in zip(tensors, feats, strict=True):
            if self.shape(a) != out_shape:
                raise self.refuse(node, what, "it broadcasts one operand over another")
            if f.block != feats[0].block:
                raise self.refuse(node, what, "its operands are flattened differently")
            self.uf.union(f.key, feats[0].key)
        self.features[node] = _Feature(feats[0].key, feats[0].block)

    # -- result -----------------------------------------------------------------
    def groups(self) -> PermutationSpec:
        fixed = {self.uf.find(k) for k in self.fixed}
        members: dict[Key, list[tuple[str, int]]] = {}
        for key in list(self.uf.parent):
            root = self.uf.find(key)
            if isinstance(key, tuple) and root not in fixed:
                members.setdefault(root, []).append(key)
        groups: dict[str, list[tuple[str, int]]] = {}
        activations: dict[str, list[str]] = {}
        order = {name: i for i, name in enumerate(self.module.state_dict())}
        for root, axes in members.items():
            axes.sort(key=lambda ta: (order.get(ta[0], 0), ta[1]))
            producer = next((t for t, a in axes if a == 0), axes[0][0])
            name = base = f"P_{producer.rsplit('.', 1)[0]}"
            suffix = 1
            while name in groups:
                suffix += 1
                name = f"{base}#{suffix}"
            groups[name] = axes
            activations[name] = [m for m, k in self.activation_modules if self.uf.find(k) == root]
        blocks = {k: b for k, b in self.blocks.items() if self.uf.find(k) not in fixed}
        ordered = sorted(groups, key=lambda g: order.get(groups[g][0][0], 0))
        return PermutationSpec(
            {g: groups[g] for g in ordered},
            blocks=blocks,
            activations={g: activations[g] for g in ordered if activations[g]},
        )


class _LeafTracer(fx.Tracer):
    """Keeps our channel LayerNorm whole (its permutes are an implementation detail)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, ChannelLayerNorm) or super().is_leaf_module(m, qualname)


def _flat(args: object) -> list[object]:
    if isinstance(args, list | tuple):
        return [x for a in args for x in _flat(a)]
    if isinstance(args, dict):
        return [x for a in args.values() for x in _flat(a)]
    return [args]


def trace_spec(module: nn.Module, example_input: torch.Tensor) -> PermutationSpec:
    """The permutation spec of `module`, traced with torch.fx on `example_input`.

    The input's and the output's feature axes are not permuted. Sizes are not filled in;
    call `infer_sizes(state)`. Raises MergerError naming the first op it cannot handle.
    """
    if _LeafTracer().is_leaf_module(module, ""):
        return PermutationSpec({})  # one built-in layer alone has no hidden units
    try:
        graph = fx.GraphModule(module, _LeafTracer().trace(module))
    except Exception as exc:  # fx raises many kinds (TraceError, TypeError, ...)
        raise MergerError(
            f"torch.fx cannot trace {type(module).__name__}: {exc}",
            hint="fx needs a forward without data-dependent control flow",
        ) from exc
    was_training = module.training
    graph.eval()
    try:
        # ShapeProp prints its own traceback on failure; the error below says it in one line
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(graph).propagate(example_input)
    except Exception as exc:
        cause = str(exc.__cause__ or exc).strip().splitlines()[0]
        raise MergerError(
            f"the example input of shape {list(example_input.shape)} does not run through "
            f"{type(module).__name__}: {cause}",
            hint="define example_input = torch.randn(2, ...) with the model's input shape in "
            "the model's file",
        ) from None
    finally:
        module.train(was_training)
    return _Tracer(module, graph).run()
