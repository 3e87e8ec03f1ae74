"""Spherical linear interpolation between a base model and one other model."""

from __future__ import annotations

import math

import torch

from core.methods.context import TensorContext
from core.methods.registry import MethodSpec, Needs, Param

# Above this |cos|, the two tensors are treated as parallel and interpolated linearly:
# the slerp formula divides by sin(θ) ≈ 0 there (same threshold as mergekit).
DOT_THRESHOLD = 0.9995
EPS = 1e-8


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Interpolate along the great circle from v0 (t=0) to v1 (t=1), per flattened tensor.

    The angle is measured between the normalised tensors; the interpolation weights
    are applied to the original (unnormalised) tensors, as mergekit does.
    """
    a, b = v0.double().flatten(), v1.double().flatten()
    na, nb = a.norm(), b.norm()
    ua = a / na if na > EPS else a
    ub = b / nb if nb > EPS else b
    dot = float(torch.dot(ua, ub))
    if abs(dot) > DOT_THRESHOLD:
        return v0.mul(1 - t).add_(v1, alpha=t)
    theta0 = math.acos(max(-1.0, min(1.0, dot)))
    sin0 = math.sin(theta0)
    s0 = math.sin(theta0 - theta0 * t) / sin0
    s1 = math.sin(theta0 * t) / sin0
    return v0.mul(s0).add_(v1, alpha=s1)


def slerp_tensor(
    inputs: list[torch.Tensor],
    base: torch.Tensor | None,
    params: dict,
    model_params: list[dict],
    ctx: TensorContext,
) -> torch.Tensor:
    assert base is not None
    return slerp(float(params["t"]), base, inputs[0])


SPEC = MethodSpec(
    name="slerp",
    label="SLERP",
    description=(
        "Spherical interpolation between the base model (t = 0) and one other model "
        "(t = 1); falls back to linear interpolation for nearly parallel tensors."
    ),
    kind="tensorwise",
    fn=slerp_tensor,
    params=(
        Param(
            "t",
            "float",
            0.5,
            "Position between the base (0) and the other model (1).",
            min=0.0,
            max=1.0,
        ),
    ),
    needs=Needs(base=True, min_models=1, max_models=1),
    reference_url="https://en.wikipedia.org/wiki/Slerp",
)
