"""Activation matching's assignments: our compiled auction against scipy, in one run.

The scores are what `merger align --by activations` builds: the cross-moment E[a bᵀ] of
two randomly initialised ReLU MLPs' hidden features on the digits (64 → W → W). Units
that never fire give rows and columns of zeros and thousands of near-ties per row, the
hard case for an auction's exact finish. Both solvers must reach the same optimum.

    .venv/bin/python benchmarks/activation_matching.py                 # W = 1024, 2048, 4096
    .venv/bin/python benchmarks/activation_matching.py --widths 1024

Times exclude start-up (imports, the forward passes, loading the compiled solver).
Prints one line per layer and width, with the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from core.alignment.activation_matching import ActivationStats
from core.alignment.solvers import solve_assignment, warm_up
from core.data import load_digits


def layer_scores(width: int) -> list[np.ndarray]:
    """Cross-moment scores of both hidden layers of two random MLPs, seeds 0 and 1."""
    x = load_digits().x
    features = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        first, second = torch.nn.Linear(64, width), torch.nn.Linear(width, width)
        with torch.no_grad():
            h1 = torch.relu(first(x))
            features.append((h1, torch.relu(second(h1))))
    scores = []
    for layer in range(2):
        stats = ActivationStats(width)
        stats.update(features[0][layer], features[1][layer])
        scores.append(stats.score().numpy())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="1024,2048,4096")
    args = parser.parse_args()
    warm_up()
    for width in (int(w) for w in args.widths.split(",")):
        for layer, score in enumerate(layer_scores(width), start=1):
            dead = int((np.abs(score).sum(1) == 0).sum())
            t0 = time.perf_counter()
            rows, cols = linear_sum_assignment(score, maximize=True)
            t_scipy = time.perf_counter() - t0
            t0 = time.perf_counter()
            perm = solve_assignment(score, solver="auction")
            t_ours = time.perf_counter() - t0
            best = float(score[rows, cols].sum())
            ours = float(score[np.arange(width), perm].sum())
            print(
                f"W={width:5d} layer {layer} ({dead:4d} dead units in A): scipy {t_scipy:7.2f} s"
                f" | auction {t_ours:6.2f} s | speed-up {t_scipy / t_ours:6.1f}x,"
                f" gap {best - ours:.2g}",
                flush=True,
            )


if __name__ == "__main__":
    main()
