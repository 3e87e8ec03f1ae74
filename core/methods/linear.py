"""Weighted average of models (mergekit's `linear`, Wortsman et al.'s model soups)."""

from __future__ import annotations

import torch

from core.errors import RecipeError
from core.methods.context import TensorContext
from core.methods.registry import MethodSpec, Needs, Param

# A sum of weights this small next to the weights themselves means they cancel out:
# dividing by it would blow the result up (or divide by zero).
CANCEL_RATIO = 1e-6


def weight_sum_divisor(weights: list[float], *, tensor: str | None = None) -> float:
    """Σ wᵢ, the divisor of `normalize`; weights that cancel out are a clear error.

    Dividing by a sum near 0 would give zeros (all weights 0) or huge values (1, −1), and
    skipping the division would quietly ignore `normalize`: neither is what was asked."""
    total = sum(weights)
    if abs(total) <= CANCEL_RATIO * sum(abs(w) for w in weights):
        shown = ", ".join(f"{w:g}" for w in weights)
        raise RecipeError(
            f"the model weights ({shown}) sum to 0, so normalize cannot divide by their sum",
            tensor=tensor,
            hint="use weights that do not cancel out, or keep the weighted sum as it is "
            "by turning normalize off: --set normalize=false, or normalize: false in a recipe",
        )
    return total


def check_weight_sum(params: dict, model_params: list[dict]) -> None:
    """Up front, for recipes whose weights are the same for every tensor."""
    if params["normalize"]:
        weight_sum_divisor([float(mp["weight"]) for mp in model_params])


def weighted_average(
    inputs: list[torch.Tensor],
    base: torch.Tensor | None,
    params: dict,
    model_params: list[dict],
    ctx: TensorContext,
) -> torch.Tensor:
    """Σ wᵢ θᵢ, divided by Σ wᵢ when `normalize` (weights summing to ~0 are refused)."""
    weights = [float(mp["weight"]) for mp in model_params]
    total = weight_sum_divisor(weights, tensor=ctx.name) if params["normalize"] else 1.0
    out = inputs[0].mul_(weights[0]) if weights[0] != 1.0 else inputs[0]
    for w, x in zip(weights[1:], inputs[1:], strict=True):
        out.add_(x, alpha=w)
    if params["normalize"]:
        out.div_(total)
    return out


SPEC = MethodSpec(
    name="linear",
    label="Weighted average",
    description="Average the models' weights, each with its own weight (a model soup).",
    kind="tensorwise",
    fn=weighted_average,
    params=(
        Param(
            "weight", "float", 1.0, "How much this model counts.", min=-100, max=100, per_model=True
        ),
        Param("normalize", "bool", True, "Divide by the sum of the weights.", per_tensor=False),
    ),
    needs=Needs(min_models=1, base_is_input=True),
    reference_url="https://arxiv.org/abs/2203.05482",
    aliases=("average", "weighted_average"),
    check_params=check_weight_sum,
)
