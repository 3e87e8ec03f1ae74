"""Per-tensor parameter values: scalars, gradients across layers, name filters."""

from __future__ import annotations

import pytest

from core.errors import RecipeError
from core.methods import REGISTRY
from core.methods.params import LayerIndex, interpolate_gradient, resolve_params, resolve_value


def test_gradient_interpolates_between_anchors():
    assert interpolate_gradient([0, 1], 0.25) == pytest.approx(0.25)
    assert interpolate_gradient([0, 0.5, 1], 0.25) == pytest.approx(0.25)
    assert interpolate_gradient([0, 1, 0], 0.5) == pytest.approx(1.0)
    assert interpolate_gradient([0.2, 0.8], 1.0) == pytest.approx(0.8)
    assert interpolate_gradient([7], 0.3) == 7


def test_layer_index_positions():
    names = [
        "embed.weight",
        "model.layers.0.w",
        "model.layers.1.w",
        "model.layers.2.w",
        "norm.weight",
        "lm_head.weight",
    ]
    idx = LayerIndex(names)
    assert [idx.t(n) for n in names] == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0]


def test_layer_index_reads_names_not_file_order():
    # safetensors lists names alphabetically: lm_head comes first but belongs at the end
    names = sorted(
        [
            "model.embed_tokens.weight",
            "model.layers.0.w",
            "model.layers.1.w",
            "model.norm.weight",
            "lm_head.weight",
        ]
    )
    idx = LayerIndex(names)
    assert idx.t("lm_head.weight") == 1.0
    assert idx.t("model.embed_tokens.weight") == 0.0
    assert idx.t("model.norm.weight") == 1.0


def test_layer_index_orders_torchvision_stages():
    names = [
        "conv1.weight",
        "layer1.0.conv1.weight",
        "layer1.1.conv1.weight",
        "layer2.0.conv1.weight",
        "layer2.1.conv1.weight",
        "fc.weight",
    ]
    idx = LayerIndex(names)
    assert [idx.t(n) for n in names] == [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]


def test_layer_index_uses_block_ranks_not_raw_numbers():
    idx = LayerIndex(["layers.0.weight", "layers.2.weight", "layers.4.weight"])
    assert [idx.t(f"layers.{i}.weight") for i in (0, 2, 4)] == [0.0, 0.5, 1.0]


def test_filters_pick_first_match_then_fallback():
    value = [{"filter": "attn", "value": 0.3}, {"filter": "mlp", "value": [0, 1]}, {"value": 0.9}]
    assert resolve_value(value, "layers.1.self_attn.q", 0.5, param="t") == 0.3
    assert resolve_value(value, "layers.1.mlp.up", 0.5, param="t") == pytest.approx(0.5)
    assert resolve_value(value, "norm.weight", 1.0, param="t") == 0.9


def test_filter_without_fallback_leaves_other_tensors_at_the_default():
    # mergekit's meaning: a tensor no filter names takes the parameter's default
    spec = REGISTRY.get("ties")
    raw = {"density": [{"filter": "attn", "value": 0.3}]}
    assert resolve_params(spec, raw, "l.attn.q", 0, per_model=True)["density"] == 0.3
    assert resolve_params(spec, raw, "l.mlp.up", 0, per_model=True)["density"] == 1.0


def test_empty_gradient_is_refused_before_any_work():
    from core.merge import validate_recipe
    from core.recipe import Recipe

    recipe = Recipe.from_yaml(
        "merge_method: ties\nbase_model: a\nmodels: [a, b]\nparameters: {lambda: []}"
    )
    with pytest.raises(RecipeError, match="empty list"):
        validate_recipe(recipe)


def test_resolve_params_types_and_ranges():
    spec = REGISTRY.get("ties")
    got = resolve_params(spec, {"density": [0.2, 0.6]}, "layers.1.w", 0.5, per_model=True)
    assert got == {"weight": 1.0, "density": pytest.approx(0.4)}
    with pytest.raises(RecipeError, match="above"):
        resolve_params(spec, {"density": 1.5}, "w", 0, per_model=True)
    with pytest.raises(RecipeError, match="must be a float"):
        resolve_params(spec, {"weight": "heavy"}, "w", 0, per_model=True)


def test_unmatched_per_model_filter_falls_back_to_the_global_value():
    spec = REGISTRY.get("task_arithmetic")
    raw = {"weight": [{"filter": "head", "value": 2.0}]}
    glob = {"weight": 0.5}
    assert resolve_params(spec, raw, "head.weight", 0, per_model=True, fallback=glob)["weight"] == 2
    assert resolve_params(spec, raw, "body.w", 0, per_model=True, fallback=glob)["weight"] == 0.5
    star = {"weight": [{"filter": "*", "value": 0.25}]}
    assert resolve_params(spec, star, "any.w", 0, per_model=True)["weight"] == 0.25


def test_a_gradient_on_a_model_without_numbered_layers_is_noted():
    from core.recipe import ModelEntry, Recipe
    from core.validate import gradients_without_layers

    names = ["embed.weight", "attn.weight", "norm.weight", "head.weight"]
    recipe = Recipe(
        merge_method="task_arithmetic",
        models=(ModelEntry("a", {"weight": [0.0, 1.0]}),),
        base_model="b",
        parameters={"lambda": [{"filter": "attn", "value": [0.2, 0.8]}, {"value": 1.0}]},
    )
    (note,) = gradients_without_layers(recipe, names)
    assert "'lambda', 'weight'" in note and "no numbered layers" in note
    # embeddings and unknown names before any block take the first value, norms and heads
    # the last, as mergekit's pre- and post-weights do
    assert "first value (2 tensors, e.g. 'embed.weight', 'attn.weight')" in note
    assert "last (2, e.g. 'norm.weight', 'head.weight')" in note
    layered = [f"layers.{i}.weight" for i in range(3)]
    assert gradients_without_layers(recipe, layered) == []
    assert (
        gradients_without_layers(recipe.with_(models=(ModelEntry("a"),), parameters={}), names)
        == []
    )
