"""Activation matching: planted permutations, hand-computed statistics, streaming, errors."""

from __future__ import annotations

import math

import pytest
import torch

from core.alignment.activation_matching import ActivationStats, activation_matching
from core.alignment.spec import PermutationSpec, invert
from core.errors import MergerError


def planted_pair(samples: int, units: int, seed: int, noise: float = 0.05):
    gen = torch.Generator().manual_seed(seed)
    a = torch.relu(torch.randn(samples, units, generator=gen))
    planted = torch.randperm(units, generator=gen)
    b = a.index_select(1, planted) + noise * torch.randn(samples, units, generator=gen)
    return a, b, planted


@pytest.mark.parametrize("metric", ["correlation", "pearson", "euclidean"])
def test_recovers_planted_permutation(metric):
    spec = PermutationSpec(
        {"h1": [("l0.weight", 0)], "h2": [("l1.weight", 0)]}, {"h1": 40, "h2": 25}
    )
    a1, b1, p1 = planted_pair(500, 40, seed=0)
    a2, b2, p2 = planted_pair(500, 25, seed=1)
    perms = activation_matching(spec, {"h1": a1, "h2": a2}, {"h1": b1, "h2": b2}, metric=metric)
    assert torch.equal(perms["h1"], invert(p1))
    assert torch.equal(perms["h2"], invert(p2))
    # Applying the perm to B's features restores A's unit order.
    torch.testing.assert_close(b1.index_select(1, perms["h1"]), a1, atol=0.3, rtol=0)


def test_streaming_in_batches_recovers_the_same_permutation():
    a, b, planted = planted_pair(600, 30, seed=3, noise=0.2)
    for metric in ("correlation", "pearson", "euclidean"):
        stats = ActivationStats(30, metric=metric)
        for start in range(0, 600, 100):
            stats.update(a[start : start + 100], b[start : start + 100])
        assert stats.count == 600
        assert torch.equal(stats.solve(), invert(planted))


def test_statistics_against_hand_computed_values():
    a1, b1 = torch.tensor([[1.0, 0.0], [2.0, 1.0]]), torch.tensor([[0.0, 3.0], [1.0, 1.0]])
    a2, b2 = torch.tensor([[0.0, 2.0]]), torch.tensor([[4.0, 0.0]])
    corr = ActivationStats(2, metric="correlation")
    corr.update(a1, b1)
    corr.update(a2, b2)
    # E[a_i b_j] over the 3 samples, by hand.
    expected = torch.tensor(
        [[(0 + 2 + 0) / 3, (3 + 2 + 0) / 3], [(0 + 1 + 8) / 3, (0 + 1 + 0) / 3]]
    )
    torch.testing.assert_close(corr.score(), expected.double())

    euc = ActivationStats(2, metric="euclidean")
    euc.update(a1, b1)
    euc.update(a2, b2)
    # −(‖a_i − b_j‖ in batch 1 + ‖a_i − b_j‖ in batch 2); a_0 = (1, 2), b_0 = (0, 1) in batch 1.
    d = [
        [math.hypot(1, 1) + 4, math.hypot(1 - 3, 2 - 1) + 0],
        [math.hypot(0, 0) + 2, math.hypot(0 - 3, 1 - 1) + 2],
    ]
    torch.testing.assert_close(euc.score(), -torch.tensor(d, dtype=torch.float64))


def test_pearson_ignores_scale_and_offset_and_handles_dead_units():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, 5, generator=gen)
    b = torch.randn(200, 5, generator=gen)
    b[:, 4] = 0.0  # a dead unit
    plain = ActivationStats(5, metric="pearson")
    plain.update(a, b)
    scaled = ActivationStats(5, metric="pearson")
    scaled.update(a * 3.0 + 7.0, b * torch.tensor([2.0, 0.5, 9.0, 1.0, 1.0]) - 1.0)
    torch.testing.assert_close(plain.score(), scaled.score())
    assert torch.all(plain.score()[:, 4] == 0)
    assert torch.all(plain.score().abs() <= 1 + 1e-9)
    self_corr = ActivationStats(5, metric="pearson")
    self_corr.update(a, a)
    torch.testing.assert_close(self_corr.score().diagonal(), torch.ones(5, dtype=torch.float64))


def test_errors_are_clear():
    with pytest.raises(MergerError, match="unknown activation-matching metric"):
        ActivationStats(3, metric="cosine")
    stats = ActivationStats(3, name="h")
    with pytest.raises(MergerError, match=r"\(samples, 3\)"):
        stats.update(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(MergerError, match="same batch"):
        stats.update(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(MergerError, match="no activations"):
        stats.solve()
    spec = PermutationSpec({"h": [("w", 0)]}, {"h": 3})
    with pytest.raises(MergerError, match="group 'h'"):
        activation_matching(spec, {}, {})


def test_progress_covers_the_assignments_and_cancel_stops_them():
    """The bar moved through the batches, then sat at 'batch 20 of 20' while the
    assignments (tens of seconds for a hard 4096-wide one) ran: they are steps too."""
    from core.alignment.activations import match_by_activations
    from core.architectures import resolve_architecture
    from core.architectures.factories import mlp_state
    from core.data import load_dataset
    from core.errors import Cancelled
    from core.jobs import Progress

    a, b = mlp_state([64, 32, 32, 10], seed=1), mlp_state([64, 32, 32, 10], seed=2)
    arch = resolve_architecture(None, a)
    events = []
    progress = Progress(events.append, min_interval=0)
    match_by_activations(arch, a, b, load_dataset("digits"), batches=3, progress=progress)
    messages = [e.message for e in events]
    assert messages[-2:] == [
        "matching units: group 1 of 2 (32 units)",
        "matching units: group 2 of 2 (32 units)",
    ]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[0] == 0.0
    assert 0.5 < fractions[-1] < 1.0  # the last group's solve still ahead
    stop = Progress(lambda e: e.message.startswith("matching") and stop.cancel(), min_interval=0)
    with pytest.raises(Cancelled):
        match_by_activations(arch, a, b, load_dataset("digits"), batches=3, progress=stop)


def test_the_bar_weighs_steps_by_their_cost():
    """A 4096-wide group's assignment (tens of seconds) gets most of the bar, a batch of a
    small MLP's forward passes little; equal steps read 90% through minutes of solving."""
    from core.alignment.activations import _StepCosts

    wide = _StepCosts(batches=20, batch_size=128, params=37_000_000, units=[4096] * 3)
    assert wide.before_solve(0) / wide.total < 0.25  # collecting is the small part
    assert wide.before_solve(1) - wide.before_solve(0) == pytest.approx(wide.total / 3, rel=0.3)
    narrow = _StepCosts(batches=20, batch_size=128, params=20_000, units=[32, 32])
    assert narrow.before_solve(0) / narrow.total > 0.9  # solving 32 units is instant
    assert [narrow.before_batch(i) for i in range(3)] == sorted(
        {narrow.before_batch(i) for i in range(3)}
    )


def test_constant_units_are_counted_from_the_statistics():
    """Dead units (all zero) and constant ones cannot be told apart by any metric."""
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(50, 6, generator=gen)
    b = torch.randn(50, 6, generator=gen)
    a[:, 1] = 0.0
    a[:, 4] = 3.5
    b[:, 0] = 0.0
    for metric in ("correlation", "pearson", "euclidean"):
        stats = ActivationStats(6, metric=metric)
        stats.update(a[:20], b[:20])
        stats.update(a[20:], b[20:])
        assert stats.constant_units() == (2, 1)


def test_data_that_cannot_tell_units_apart_is_refused_or_noted():
    """One example, or inputs that leave a layer flat, are refused; dead units and fewer
    samples than units are said, beside a result that is still computed."""
    from core.alignment.activations import match_by_activations
    from core.architectures import resolve_architecture
    from core.architectures.factories import mlp_state
    from core.data import load_dataset
    from core.data.dataset import Dataset

    a, b = mlp_state([64, 32, 32, 10], seed=1), mlp_state([64, 32, 32, 10], seed=2)
    arch = resolve_architecture(None, a)
    digits = load_dataset("digits")
    one = Dataset(digits.x[:1], None, "one")
    with pytest.raises(MergerError, match="the data has 1"):
        match_by_activations(arch, a, b, one)
    flat = Dataset(torch.zeros(100, 64), None, "zeros")
    with pytest.raises(MergerError, match=r"no unit of permutation group '[\w.]+' varies"):
        match_by_activations(arch, a, b, flat)
    few = Dataset(digits.x[:20], None, "few")
    group = next(g for g, axes in arch.spec.groups.items() if ("layers.0.bias", 0) in axes)

    def dead_in_a() -> tuple[int, list[str]]:
        notes: list[str] = []
        perms = match_by_activations(arch, a, b, few, notes=notes)
        assert set(perms) == set(arch.spec.groups)
        said = [n for n in notes if n.startswith(f"group {group}: ")]
        return (int(said[0].split()[2]) if said else 0), notes

    before, _ = dead_in_a()
    alive = (a["layers.0.weight"] @ digits.x[:20].T + a["layers.0.bias"][:, None]).amax(1) > 0
    silenced = torch.nonzero(alive).flatten()[:3]
    a["layers.0.bias"][silenced] = -1e4  # three live units of A that no digit switches on
    after, notes = dead_in_a()
    assert after == before + 3, notes
    assert any("20 samples for 32 units" in n for n in notes), notes
