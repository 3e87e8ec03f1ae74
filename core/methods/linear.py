"""Weighted average of models (mergekit's `linear`, Wortsman et al.'s model soups)."""

from __future__ import annotations

import torch

from core.methods.context import TensorContext
from core.methods.registry import MethodSpec, Needs, Param


def weighted_average(
    inputs: list[torch.Tensor],
    base: torch.Tensor | None,
    params: dict,
    model_params: list[dict],
    ctx: TensorContext,
) -> torch.Tensor:
    """Σ wᵢ θᵢ, divided by Σ wᵢ when `normalize` (skipped if the weights sum to ~0)."""
    weights = [float(mp["weight"]) for mp in model_params]
    out = inputs[0].mul_(weights[0]) if weights[0] != 1.0 else inputs[0]
    for w, x in zip(weights[1:], inputs[1:], strict=True):
        out.add_(x, alpha=w)
    total = sum(weights)
    if params["normalize"] and abs(total) >= 1e-8:
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
)
