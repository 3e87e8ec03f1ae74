"""Git Re-Basin merges: align B to A by permutations, then interpolate with λ.

Model-level methods: they need both whole models and an architecture (detected from the
checkpoint, a built-in family name, or `path/to/model.py:factory`).
"""

from __future__ import annotations

import torch

from core.alignment.activation_matching import METRICS
from core.alignment.align import FEW_BN_EXAMPLES, align, interpolate, repair_batchnorm
from core.architectures import Architecture, is_file_reference
from core.data import Dataset, load_dataset
from core.methods.registry import MethodSpec, Needs, Param

_LAMBDA = Param(
    "lambda",
    "float",
    0.5,
    "Position between model A (0) and the aligned model B (1). At 1 the output is B "
    "aligned to A: the same function as B (what `merger align` writes).",
    min=0.0,
    max=1.0,
    per_tensor=False,
)
_SOLVER = Param(
    "solver",
    "choice",
    "auto",
    "Linear-assignment solver: 'auction' (compiled, exact, warm-started; on the GPU "
    "with device cuda), 'scipy' (the reference), or auto (by device and size).",
    choices=("auto", "scipy", "auction"),
    per_tensor=False,
)
_RESET_BN = Param(
    "reset_bn",
    "bool",
    True,
    "Re-estimate BatchNorm statistics on the data after "
    "interpolating (only when data is given and the model has BatchNorm).",
    per_tensor=False,
    label="Re-estimate BatchNorm",
)


def _merge(ctx, method: str) -> dict[str, torch.Tensor]:
    a_ckpt, b_ckpt = ctx.inputs
    ctx.progress.update(0, 1, "loading models")
    state_a, state_b = ctx.load(a_ckpt), ctx.load(b_ckpt)
    data = load_dataset(ctx.recipe.data, labels=False) if ctx.recipe.data else None
    result = align(
        state_a,
        state_b,
        arch=ctx.recipe.arch,
        method=method,
        data=data,
        max_iter=int(ctx.params.get("max_iter", 100)),
        seed=ctx.recipe.seed,
        solver=ctx.params["solver"],
        metric=ctx.params.get("metric", "correlation"),
        batches=int(ctx.params.get("batches", 20)),
        device=ctx.device,
        progress=ctx.progress,
        allow_code=ctx.allow_code,
        source=str(a_ckpt.path),
    )
    lam = float(ctx.params["lambda"])
    merged = interpolate(state_a, result.aligned_b, lam)
    notes = list(result.notes)
    reset, has_bn = ctx.params["reset_bn"], _has_batchnorm(merged)
    if reset and lam in (0.0, 1.0):
        if data is not None and has_bn:
            notes.append(
                f"kept BatchNorm statistics: at lambda {lam:g} the output is model "
                f"{'B aligned' if lam else 'A'}, whose statistics are already right"
            )
    elif reset and data is None and has_bn:
        notes.append(
            "BatchNorm statistics are interpolated, not re-estimated: no data was given "
            "(interpolated statistics can cost much accuracy; give data, --data or Data "
            "in the window, to re-estimate them)"
        )
    elif reset and data is not None:
        merged, count = repair_batchnorm(result.arch, merged, data)
        if count:
            how_many = _examples(len(data))
            if len(data) < FEW_BN_EXAMPLES:
                how_many += ": few, so the statistics are rough; a few hundred give steadier ones"
            notes.append(
                f"re-estimated BatchNorm statistics of {count} layer(s) on {data.name} ({how_many})"
            )
    if method == "weight" and data is not None and not (has_bn and reset):
        # (with BatchNorm and reset_bn on, the data re-estimated the statistics, or at
        # λ 0 or 1 the note above says why they were kept)
        why = "the models have no BatchNorm statistics" if not has_bn else "reset_bn is off"
        shape = traced_on_data(ctx.recipe.arch, result.arch, data)
        used = (
            f"served only for its examples' shape {shape}, to trace {result.arch.name}"
            if shape
            else "is not used for the merge"
        )
        notes.append(f"data {data.name} {used}: weight matching needs none, and {why}")
    ctx.notes.extend(notes)
    return merged


def traced_on_data(arch: str | None, architecture: Architecture, data: Dataset) -> list[int]:
    """The data's example shape when it is the input a user's model file was traced on
    (the file defines no `example_input` of another shape: `core.architectures.custom`
    falls back to the data's), else [] (a built-in family's spec is written, not traced).

    So that weight matching, which compares weights alone, does not call data "not used"
    when without it the model could not have been traced."""
    if arch is None or not is_file_reference(arch) or architecture.input_shape is None:
        return []
    shape = list(data.input_shape)
    return shape if list(architecture.input_shape) == shape else []


def _examples(count: int) -> str:
    return f"{count} example{'s' if count != 1 else ''}"


def _has_batchnorm(state: dict[str, torch.Tensor]) -> bool:
    return any(name.endswith("running_var") for name in state)


def merge_weight_matching(ctx) -> dict[str, torch.Tensor]:
    return _merge(ctx, "weight")


def merge_activation_matching(ctx) -> dict[str, torch.Tensor]:
    return _merge(ctx, "activation")


SPECS = (
    MethodSpec(
        name="weight_matching",
        label="Git Re-Basin: weight matching",
        description="Permute model B's hidden units to match model A's weights (data-free "
        "coordinate descent), then interpolate A and the aligned B with lambda.",
        kind="model",
        fn=merge_weight_matching,
        params=(
            _LAMBDA,
            Param(
                "max_iter",
                "int",
                100,
                "Most coordinate-descent sweeps; it stops earlier once a sweep improves nothing.",
                min=1,
                max=10_000,
                per_tensor=False,
                label="Max sweeps",
            ),
            _SOLVER,
            _RESET_BN,
        ),
        needs=Needs(arch=True, uses_data=True, min_models=2, max_models=2),
        reference_url="https://arxiv.org/abs/2209.04836",
    ),
    MethodSpec(
        name="activation_matching",
        label="Git Re-Basin: activation matching",
        description="Permute model B's hidden units so its activations on the data match model "
        "A's, then interpolate A and the aligned B with lambda.",
        kind="model",
        fn=merge_activation_matching,
        params=(
            _LAMBDA,
            Param(
                "metric",
                "choice",
                "correlation",
                "How units are compared. correlation: the cross-moment E[a·b] of their "
                "activations (what Git Re-Basin's code computes; not centred, so a unit's "
                "offset and scale count). pearson: Pearson correlation, blind to each "
                "unit's offset and scale. euclidean: minus the Euclidean distance (PLeaS), "
                "summed over batches of 128 examples.",
                choices=METRICS,
                per_tensor=False,
            ),
            Param(
                "batches",
                "int",
                20,
                "Batches of data (of 128) used to measure activations.",
                min=1,
                max=10_000,
                per_tensor=False,
            ),
            _SOLVER,
            _RESET_BN,
        ),
        needs=Needs(arch=True, data=True, min_models=2, max_models=2),
        reference_url="https://arxiv.org/abs/2209.04836",
    ),
)
