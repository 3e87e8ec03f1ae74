"""The task-vector family: task arithmetic, TIES, DARE (linear and TIES), one code path.

Every method here works on task vectors τᵢ = θᵢ − θ₀ of one tensor at a time:

1. optional sparsification of each τᵢ (TIES: keep the top-`density` magnitudes;
   DARE: keep each entry with probability `density`, optionally rescaled);
2. weighting by `weight`ᵢ;
3. optional sign consensus (TIES "elect": the sign of Σᵢ wᵢτᵢ, by mass), keeping only
   the entries that agree with it;
4. summing, and dividing by the (agreeing) weights' sum when `normalize` — the TIES
   "disjoint mean"; with `normalize` off it is the disjoint sum (fusion_bench's TIES);
5. θ = θ₀ + λ·τ.

This follows mergekit's generalized task arithmetic so that published recipes give the
same tensors. Deliberate choices, documented in docs/methods.md:
* trimming is per tensor (mergekit) by default; `trim: model` keeps each task vector's
  largest entries over the whole model, as the TIES reference code (`trim.py`);
* DARE's rescale defaults to mergekit's L1-norm matching; `rescale_mode: inverse`
  gives the paper's 1/density.
"""

from __future__ import annotations

import torch

from core.errors import RecipeError
from core.methods.context import PrepareContext, TensorContext
from core.methods.linear import check_weight_sum, weight_sum_divisor
from core.methods.registry import MethodSpec, Needs, Param
from core.methods.trim import kth_largest_magnitude, magnitude_thresholds

# Elements per step of a large tensor: temporaries stay tens of MB whatever the tensor's
# size (an LLM's embedding is hundreds of millions of values), and progress and cancel are
# served between steps. Not smaller: each elementwise op is one OpenMP region whose start
# costs milliseconds on a busy machine, and 1M-value steps made a 1 GB task-arithmetic
# merge 2-3x slower than whole-tensor ops (benchmarks/streaming_merge.py); at 16M values
# it is back to the whole-tensor time.
CHUNK = 1 << 24


class _Steps:
    """Chunks of a flat tensor, with progress and cancellation between them.

    Only tensors of more than one chunk report (`ctx.tick`): a small one is a blink, and
    thousands of them would flood the progress sink."""

    def __init__(self, n: int, passes: int, ctx: TensorContext) -> None:
        self.slices = [slice(s, min(n, s + CHUNK)) for s in range(0, n, CHUNK)]
        self._total = passes * len(self.slices)
        self._done = 0
        self._tick = ctx.tick if len(self.slices) > 1 else None

    def __iter__(self):
        for part in self.slices:
            yield part
            self.step()

    def step(self) -> None:
        self._done += 1
        if self._tick is not None:
            self._tick(min(1.0, self._done / self._total))


def _magnitude_keep(
    delta: torch.Tensor, density: float, steps: _Steps, threshold: float | None
) -> None:
    """Zero all but the largest-magnitude entries of flat `delta`, in place.

    With a model-wide `threshold`, entries at least that large stay. Otherwise exactly
    ⌊density·n⌋ stay, as mergekit's `topk`: all above the k-th largest magnitude, then
    entries equal to it in index order until k (topk leaves that choice to the sort)."""
    if threshold is not None:
        for part in steps:
            delta[part].mul_(delta[part].abs() >= threshold)
        return
    k = int(density * delta.numel())
    if k == 0:
        delta.zero_()
        return
    value, above = kth_largest_magnitude(delta, k, chunk=CHUNK, between=steps.step)
    ties = k - above  # entries equal to `value` still to keep, in index order
    for part in steps:
        mags = delta[part].abs()
        keep = mags > value
        if ties > 0:
            equal = mags == value
            tied = int(equal.sum())
            keep |= equal if tied <= ties else equal & (torch.cumsum(equal, 0) <= ties)
            ties -= tied
        delta[part].mul_(keep)


def _random_keep(delta: torch.Tensor, density: float, gen: torch.Generator, steps: _Steps) -> None:
    """Keep each entry of flat `delta` with probability `density`, in place. Draws come
    chunk by chunk from one generator: the same numbers as one draw for the tensor."""
    for part in steps:
        n = part.stop - part.start
        draw = torch.rand(n, generator=gen, device=delta.device, dtype=torch.float32)
        delta[part].mul_(draw < density)


def _abs_sum(delta: torch.Tensor, steps: _Steps) -> float:
    return sum(float(delta[part].abs().sum(dtype=torch.float64)) for part in steps.slices)


def _sparsify(
    delta: torch.Tensor,
    density: float,
    how: str,
    steps: _Steps,
    *,
    rescale: bool,
    rescale_mode: str,
    gen: torch.Generator | None = None,
    threshold: float | None = None,
) -> torch.Tensor:
    """Zero all but a `density` fraction of flat `delta`, in place; rescale the survivors
    if asked ("l1": to the L1 norm before dropping, mergekit; "inverse": by 1/density).

    A magnitude `threshold` (from a model-wide trim) replaces this tensor's own top-k."""
    if density >= 1.0:
        return delta
    before = _abs_sum(delta, steps) if rescale and rescale_mode != "inverse" else 0.0
    if how == "magnitude":
        _magnitude_keep(delta, density, steps, threshold)
    else:
        assert gen is not None
        _random_keep(delta, density, gen, steps)
    if not rescale:
        return delta
    if rescale_mode == "inverse":
        return delta.div_(density) if density > 0 else delta
    after = _abs_sum(delta, steps)
    if before < 1e-7 or after < 1e-7:
        return delta
    return delta.mul_(before / after)


def _weighted_deltas(
    inputs: list[torch.Tensor],
    base: torch.Tensor,
    params: dict,
    model_params: list[dict],
    ctx: TensorContext,
    sparsification: str | None,
    steps: _Steps,
) -> list[torch.Tensor]:
    """wᵢ·sparsify(θᵢ − θ₀) of flat tensors, computed in the input buffers themselves (no
    new tensors: a streamed merge is bound by memory traffic, and fresh buffers cost page
    faults)."""
    deltas = []
    for i, (x, mp) in enumerate(zip(inputs, model_params, strict=True)):
        for part in steps:
            x[part].sub_(base[part])
        if sparsification is not None:
            gen = ctx.generator(i, device=x.device) if sparsification == "random" else None
            _sparsify(
                x,
                float(mp["density"]),
                sparsification,
                steps,
                rescale=bool(params["rescale"]),
                rescale_mode=params.get("rescale_mode", "l1"),
                gen=gen,
                threshold=mp.get("trim_threshold"),
            )
        deltas.append(x.mul_(float(mp["weight"])))
    return deltas


def _disjoint_merge(
    deltas: list[torch.Tensor], weights: list[float], how: str, normalize: bool
) -> torch.Tensor:
    """TIES elect + disjoint merge of one chunk: Σ agreeing wᵢτᵢ, divided by Σ agreeing wᵢ
    when `normalize`; ties at zero elect +.

    An entry agrees when its sign equals the elected sign, so zeros (trimmed or dropped
    entries) never count, as in the paper and mergekit.
    """
    votes = torch.zeros_like(deltas[0])
    for d in deltas:
        votes.add_(d if how == "sum" else d.sign())
    elected = torch.where(votes >= 0, 1.0, -1.0).to(votes.dtype)
    mixed, divisor = votes.zero_(), torch.zeros_like(votes)
    for d, w in zip(deltas, weights, strict=True):
        agree = d.sign() == elected
        mixed.add_(torch.where(agree, d, 0.0))
        divisor.add_(agree.to(divisor.dtype), alpha=w)
    if normalize:
        divisor[divisor == 0] = 1
        mixed.div_(divisor)
    return mixed


def merge_task_vectors(
    inputs: list[torch.Tensor],
    base: torch.Tensor,
    params: dict,
    model_params: list[dict],
    ctx: TensorContext,
    *,
    sparsification: str | None,
    consensus: str | None,
) -> torch.Tensor:
    """θ₀ + λ·combine(sparsify(θᵢ − θ₀)) for one tensor; see the module docstring.

    Works on flat views, a chunk at a time, in the input buffers: a tensor of any size
    needs only a few MB besides its inputs, and reports progress as it goes."""
    shape = base.shape
    base, inputs = _flat(base), [_flat(x) for x in inputs]
    steps = _Steps(base.numel(), _passes(params, model_params, sparsification), ctx)
    deltas = _weighted_deltas(inputs, base, params, model_params, ctx, sparsification, steps)
    weights = [float(mp["weight"]) for mp in model_params]
    lam = float(params["lambda"])
    divisor = None
    if consensus is None and params["normalize"]:
        divisor = weight_sum_divisor(weights, tensor=ctx.name)
    for part in steps:
        chunk = [d[part] for d in deltas]
        if consensus is not None:
            mixed = _disjoint_merge(chunk, weights, consensus, bool(params["normalize"]))
        else:
            mixed = chunk[0]
            for d in chunk[1:]:
                mixed.add_(d)
            if divisor is not None:
                mixed.div_(divisor)
        base[part].add_(mixed, alpha=lam)
    return base.view(shape)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """x as one flat view of its own memory (in-place math must reach the buffer)."""
    return (x if x.is_contiguous() else x.contiguous()).view(-1)


def _passes(params: dict, model_params: list[dict], sparsification: str | None) -> int:
    """How many chunked passes the merge makes, for progress: per model the subtraction
    and, where entries are dropped, the dropping (a per-tensor magnitude trim first
    counts twice), then the combination."""
    total = 1
    for mp in model_params:
        total += 1
        if sparsification is not None and float(mp["density"]) < 1.0:
            total += 3 if sparsification == "magnitude" and "trim_threshold" not in mp else 1
    return total


def _make(sparsification: str | None, consensus: str | None):
    def fn(inputs, base, params, model_params, ctx):
        if base is None:
            raise RecipeError("this method needs a base model (the common ancestor)")
        return merge_task_vectors(
            inputs,
            base,
            params,
            model_params,
            ctx,
            sparsification=sparsification,
            consensus=consensus,
        )

    return fn


_WEIGHT = Param(
    "weight",
    "float",
    1.0,
    "Scale of this model's task vector.",
    min=-100.0,
    max=100.0,
    per_model=True,
)
_DENSITY = Param(
    "density",
    "float",
    1.0,
    "Fraction of the task vector's entries kept (1 = all).",
    min=0.0,
    max=1.0,
    per_model=True,
)
_LAMBDA = Param(
    "lambda",
    "float",
    1.0,
    "Scale of the combined task vector; negative values subtract a task (forgetting).",
    min=-10.0,
    max=10.0,
)
_INT8 = Param(
    "int8_mask",
    "bool",
    False,
    "Accepted for mergekit recipes; has no effect on the result (it only saves memory there).",
    per_tensor=False,
    label="Int8 mask (no effect)",
)


def _normalize(default: bool, help_text: str) -> Param:
    return Param("normalize", "bool", default, help_text, per_tensor=False)


def _rescale(default: bool) -> tuple[Param, Param]:
    return (
        Param(
            "rescale",
            "bool",
            default,
            "Rescale the kept entries after dropping, so the task vector keeps its size.",
            per_tensor=False,
        ),
        Param(
            "rescale_mode",
            "choice",
            "l1",
            "l1: match the L1 norm before dropping (mergekit); "
            "inverse: divide by density (the DARE paper).",
            choices=("l1", "inverse"),
            per_tensor=False,
        ),
    )


def _model_trim(ctx: PrepareContext) -> list[dict] | None:
    """`trim: model`: each input's magnitude threshold over its whole task vector."""
    if ctx.params.get("trim") != "model":
        return None
    if ctx.varies("density"):
        raise RecipeError(
            "trim: model keeps each task vector's largest entries over the whole model, "
            "so it needs one density per model, not a value per tensor or layer",
            hint="use trim: tensor to vary the density by tensor",
        )
    densities = [float(mp["density"]) for mp in ctx.model_params]
    if all(d >= 1.0 for d in densities):
        return None
    thresholds = magnitude_thresholds(ctx.task_vectors, densities, between=ctx.check)
    return [{"trim_threshold": t} for t in thresholds]


def _model_trim_passes(ctx: PrepareContext) -> int:
    """`trim: model` reads every task vector twice (count, then refine); else no pass."""
    if ctx.params.get("trim") != "model" or ctx.varies("density"):
        return 0
    return 0 if all(float(mp["density"]) >= 1.0 for mp in ctx.model_params) else 2


_TRIM = Param(
    "trim",
    "choice",
    "tensor",
    "tensor: keep the largest entries of each tensor (mergekit). model: of each task vector "
    "over the whole model, as the TIES reference code (reads the models twice more).",
    choices=("tensor", "model"),
    per_tensor=False,
)
_TA_NEEDS = Needs(base=True, min_models=1)
_DARE_NEEDS = Needs(base=True, min_models=1, random=True)

SPECS = (
    MethodSpec(
        name="task_arithmetic",
        label="Task arithmetic",
        description="Add the weighted task vectors (fine-tuned − base) to the base, scaled by "
        "lambda; a negative weight or lambda removes a task.",
        kind="tensorwise",
        fn=_make(None, None),
        params=(_WEIGHT, _LAMBDA, _normalize(False, "Divide by the sum of the weights."), _INT8),
        needs=_TA_NEEDS,
        reference_url="https://arxiv.org/abs/2212.04089",
        check_params=check_weight_sum,
    ),
    MethodSpec(
        name="ties",
        label="TIES",
        description="Trim each task vector to its largest entries, elect a sign per entry by "
        "mass, and average (or sum) only the agreeing entries.",
        kind="tensorwise",
        fn=_make("magnitude", "sum"),
        params=(
            _WEIGHT,
            Param(
                "density",
                "float",
                1.0,
                "Fraction of each task vector's largest-magnitude "
                "entries kept (the TIES paper keeps 0.2; 1 keeps all, as mergekit's default).",
                min=0.0,
                max=1.0,
                per_model=True,
            ),
            _LAMBDA,
            _TRIM,
            _normalize(
                True,
                "On: disjoint mean of the agreeing entries (TIES paper). "
                "Off: disjoint sum (fusion_bench).",
            ),
            *_rescale(False),
            _INT8,
        ),
        needs=_TA_NEEDS,
        reference_url="https://arxiv.org/abs/2306.01708",
        prepare=_model_trim,
        prepare_passes=_model_trim_passes,
    ),
    MethodSpec(
        name="dare_linear",
        label="DARE (linear)",
        description="Randomly drop task-vector entries (keeping a `density` fraction), rescale "
        "the rest, then add them like task arithmetic. Seeded by the recipe's seed.",
        kind="tensorwise",
        fn=_make("random", None),
        params=(
            _WEIGHT,
            _DENSITY,
            _LAMBDA,
            _normalize(False, "Divide by the sum of the weights."),
            *_rescale(True),
            _INT8,
        ),
        needs=_DARE_NEEDS,
        reference_url="https://arxiv.org/abs/2311.03099",
        check_params=check_weight_sum,
    ),
    MethodSpec(
        name="dare_ties",
        label="DARE-TIES",
        description="DARE's random drop and rescale, then TIES's sign election and merge of the "
        "agreeing entries. Seeded by the recipe's seed.",
        kind="tensorwise",
        fn=_make("random", "sum"),
        params=(
            _WEIGHT,
            _DENSITY,
            _LAMBDA,
            _normalize(False, "Divide by the sum of the agreeing weights (disjoint mean)."),
            *_rescale(True),
            _INT8,
        ),
        needs=_DARE_NEEDS,
        reference_url="https://arxiv.org/abs/2311.03099",
    ),
)
