"""PermutationSpec: applying permutations, blocked axes, and the invariance self-test."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.alignment.spec import PermutationSpec, expand_blocks, invert, is_statistic
from core.errors import MergerError


def _mlp_state() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    return net, dict(net.state_dict())


def _mlp_spec() -> PermutationSpec:
    return PermutationSpec(
        {
            "P0": [("0.weight", 0), ("0.bias", 0), ("2.weight", 1)],
            "P1": [("2.weight", 0), ("2.bias", 0), ("4.weight", 1)],
        }
    )


def test_apply_moves_rows_and_columns_by_index_select():
    spec = PermutationSpec({"P": [("a", 0), ("b", 1)]})
    state = {"a": torch.tensor([10.0, 20.0, 30.0]), "b": torch.arange(6.0).reshape(2, 3)}
    out = spec.infer_sizes(state).apply(state, {"P": torch.tensor([2, 0, 1])})
    assert out["a"].tolist() == [30.0, 10.0, 20.0]
    assert out["b"].tolist() == [[2.0, 0.0, 1.0], [5.0, 3.0, 4.0]]
    assert state["a"].tolist() == [10.0, 20.0, 30.0]  # input untouched


def test_invert_undoes_a_permutation():
    perm = torch.tensor([3, 0, 2, 1])
    x = torch.arange(4.0) * 7
    assert torch.equal(x[perm][invert(perm)], x)


def test_blocked_axis_moves_whole_blocks():
    # 2 channels flattened with 3 spatial positions each: [c0 c0 c0 c1 c1 c1]
    assert expand_blocks(torch.tensor([1, 0]), 3).tolist() == [3, 4, 5, 0, 1, 2]
    spec = PermutationSpec({"P": [("w", 1)]}, blocks={("w", 1): 3})
    state = {"w": torch.arange(6.0).reshape(1, 6)}
    assert spec.infer_sizes(state).sizes == {"P": 2}
    out = spec.apply(state, {"P": torch.tensor([1, 0])})
    assert out["w"].tolist() == [[3.0, 4.0, 5.0, 0.0, 1.0, 2.0]]


def test_infer_sizes_rejects_disagreeing_axes_and_integer_buffers():
    with pytest.raises(MergerError, match="different sizes"):
        PermutationSpec({"P": [("a", 0), ("b", 0)]}).infer_sizes(
            {"a": torch.zeros(3), "b": torch.zeros(4)}
        )
    with pytest.raises(MergerError, match="integer tensor"):
        PermutationSpec({"P": [("n", 0)]}).infer_sizes({"n": torch.zeros(3, dtype=torch.long)})
    with pytest.raises(MergerError, match="lacks"):
        PermutationSpec({"P": [("gone", 0)]}).infer_sizes({"a": torch.zeros(3)})


def test_is_statistic():
    assert is_statistic("features.1.running_mean") and is_statistic("bn1.running_var")
    assert not is_statistic("bn1.weight") and not is_statistic("bn1.num_batches_tracked")


def test_self_test_passes_for_a_correct_spec_and_returns_tiny_difference():
    net, state = _mlp_state()
    diff = _mlp_spec().self_test(net, state, torch.randn(7, 6))
    assert 0.0 <= diff < 1e-12


def test_self_test_names_the_group_with_a_missing_axis():
    net, state = _mlp_state()
    spec = _mlp_spec()
    spec.groups["P1"] = [("2.weight", 0), ("2.bias", 0)]  # forgot the consumer's columns
    spec = PermutationSpec(spec.groups)
    with pytest.raises(MergerError, match="group 'P1'"):
        spec.self_test(net, state, torch.randn(7, 6))


def test_self_test_catches_a_permuted_output_layer():
    net, state = _mlp_state()
    spec = PermutationSpec(dict(_mlp_spec().groups, OUT=[("4.weight", 0), ("4.bias", 0)]))
    with pytest.raises(MergerError, match="group 'OUT'"):
        spec.self_test(net, state, torch.randn(7, 6))


def test_self_test_does_not_modify_the_callers_module():
    net, state = _mlp_state()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _mlp_spec().self_test(net, state, torch.randn(2, 6))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert next(net.parameters()).dtype == torch.float32
