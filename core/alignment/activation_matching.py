"""Activation matching: pair each hidden unit of A with the unit of B that fires alike.

Git Re-Basin's data-driven variant: for every permutation group, run both models on the
same inputs, compare A's and B's features unit by unit, and solve one linear assignment
per group (no coordinate descent: groups are independent). How activations are gathered
(hooks, fx, a file) is not our business: `ActivationStats` takes (samples, units)
batches and keeps only running sums, so memory does not grow with the data.

Metrics:
* ``correlation``: cross-moment E[a bᵀ] (the official default, despite its name there).
* ``pearson``: Pearson correlation, invariant to each unit's scale and offset.
* ``euclidean``: −Σ_batches ‖a_i − b_j‖₂ with a_i unit i over the batch (PLeaS).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from core.alignment.solvers import solve_assignment
from core.alignment.spec import Perms, PermutationSpec
from core.errors import MergerError

METRICS = ("correlation", "pearson", "euclidean")


class ActivationStats:
    """Streaming statistics of A's and B's features for one permutation group."""

    def __init__(self, units: int, *, metric: str = "correlation", name: str = "") -> None:
        if metric not in METRICS:
            raise MergerError(
                f"unknown activation-matching metric '{metric}'; use one of {', '.join(METRICS)}"
            )
        self.units, self.metric, self.name = units, metric, name
        self.count = 0
        z = torch.zeros
        self._cross = z((units, units), dtype=torch.float64)  # Σ a bᵀ, or −Σ dist
        self._sum_a, self._sum_b = z(units, dtype=torch.float64), z(units, dtype=torch.float64)
        self._sq_a, self._sq_b = z(units, dtype=torch.float64), z(units, dtype=torch.float64)

    def update(self, a_batch: torch.Tensor, b_batch: torch.Tensor) -> None:
        """Add one batch: both (samples, units), rows of A and B from the same inputs."""
        a, b = self._check(a_batch), self._check(b_batch)
        if a.shape[0] != b.shape[0]:
            raise MergerError(
                f"group '{self.name}': A gave {a.shape[0]} samples but B gave {b.shape[0]}",
                hint="feed both models the same batch",
            )
        self.count += a.shape[0]
        sq_a, sq_b = (a * a).sum(0), (b * b).sum(0)
        self._sum_a += a.sum(0)
        self._sum_b += b.sum(0)
        self._sq_a += sq_a
        self._sq_b += sq_b
        if self.metric == "euclidean":
            sq = sq_a[:, None] + sq_b[None, :] - 2.0 * (a.T @ b)
            self._cross -= sq.clamp_min(0.0).sqrt()
        else:
            self._cross += a.T @ b

    def constant_units(self) -> tuple[int, int]:
        """How many of A's and of B's units never varied over the data (dead ReLUs, or data
        that does not reach them): nothing tells them apart, so their pairing is arbitrary."""
        n = max(self.count, 1)

        def constant(total: torch.Tensor, squares: torch.Tensor) -> int:
            variance = squares / n - (total / n) ** 2
            return int((variance <= 1e-10 * squares / n).sum())

        return constant(self._sum_a, self._sq_a), constant(self._sum_b, self._sq_b)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.units:
            raise MergerError(
                f"group '{self.name}': activations must be (samples, {self.units}), "
                f"got {list(x.shape)}",
                hint="flatten batch and spatial positions into samples, units last",
            )
        x = x.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise MergerError(f"group '{self.name}': activations contain NaN or inf values")
        return x

    def score(self) -> torch.Tensor:
        """(units_A, units_B) similarity; larger means the two units should be paired."""
        if self.count == 0:
            raise MergerError(f"group '{self.name}': no activations were collected")
        if self.metric != "pearson":
            return self._cross / self.count if self.metric == "correlation" else self._cross
        n = self.count
        mean_a, mean_b = self._sum_a / n, self._sum_b / n
        cov = self._cross / n - mean_a[:, None] * mean_b[None, :]
        std_a = (self._sq_a / n - mean_a**2).clamp_min(0.0).sqrt()
        std_b = (self._sq_b / n - mean_b**2).clamp_min(0.0).sqrt()
        # Dead units (std 0) correlate with nothing: score 0 rather than NaN.
        denom = std_a[:, None] * std_b[None, :]
        return torch.where(denom > 1e-12, cov / denom.clamp_min(1e-12), torch.zeros_like(cov))

    def solve(self, *, solver: str = "auto", device: str = "auto") -> torch.Tensor:
        """B's permutation for this group: B unit perm[i] is paired with A unit i."""
        perm = solve_assignment(
            self.score(), maximize=True, device=device, solver=None if solver == "auto" else solver
        )
        return torch.from_numpy(perm)


def activation_matching(
    spec: PermutationSpec,
    acts_a: Mapping[str, torch.Tensor],
    acts_b: Mapping[str, torch.Tensor],
    *,
    metric: str = "correlation",
    solver: str = "auto",
    device: str = "auto",
) -> Perms:
    """Permutations of B's units from per-group (samples, units) activations of A and B.

    Every group of `spec` needs activations; apply the result with `spec.apply(state_b, ·)`.
    """
    perms: Perms = {}
    for group in spec.groups:
        if group not in acts_a or group not in acts_b:
            raise MergerError(
                f"no activations for permutation group '{group}'",
                hint="collect features for every group of the spec",
            )
        units = spec.sizes.get(group, int(acts_a[group].shape[-1]))
        stats = ActivationStats(units, metric=metric, name=group)
        stats.update(acts_a[group], acts_b[group])
        perms[group] = stats.solve(solver=solver, device=device)
    return perms
