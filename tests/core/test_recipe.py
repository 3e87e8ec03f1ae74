"""Recipes in mergekit's vocabulary: load, validate, round-trip, refuse what we lack."""

from __future__ import annotations

import pytest

from core.errors import RecipeError
from core.merge import validate_recipe
from core.recipe import Recipe

MERGEKIT_TIES = """
models:
  - model: psmathur/orca_mini_v3_13b
    parameters:
      density: [1, 0.7, 0.1] # density gradient
      weight: 1.0
  - model: garage-bAInd/Platypus2-13B
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1] # weight gradient
  - model: WizardLM/WizardMath-13B-V1.0
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: TheBloke/Llama-2-13B-fp16
parameters:
  normalize: true
  int8_mask: true
dtype: float16
"""


def test_mergekit_ties_example_loads_and_validates():
    recipe = Recipe.from_yaml(MERGEKIT_TIES)
    assert recipe.merge_method == "ties"
    assert recipe.dtype == "float16"
    assert recipe.models[1].parameters["weight"] == [0, 0.3, 0.7, 1]
    validate_recipe(recipe)


def test_round_trip_through_yaml():
    recipe = Recipe.from_yaml(MERGEKIT_TIES)
    again = Recipe.from_yaml(recipe.to_yaml())
    assert again == recipe


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("merge_method: passthrough\nslices: []", "slices"),
        ("merge_method: ties\nmodels: [a]\ntokenizer_source: union", "tokenizer"),
        ("models: [a]", "merge_method"),
        ("merge_method: nonsense\nmodels: [a]", "unknown merge method"),
        ("merge_method: ties\nmodels: [a, b]", "needs a base model"),
        ("merge_method: slerp\nbase_model: a\nmodels: [a, b, c]", "at most 1"),
        ("merge_method: ties\nbase_model: a\nmodels: [a, b]\nparameters: {lamda: 1}", "lamda"),
        (
            "merge_method: ties\nbase_model: a\nmodels: [{model: b, parameters: {density: 2}}]",
            "above",
        ),
        (
            "merge_method: ties\nbase_model: a\nmodels: [{model: b, parameters: {normalize: true}}]",
            "whole merge",
        ),
        ("merge_method: linear\nmodels: [a]\ndtype: float8", "dtype"),
        ("merge_method: linear\nmodels: [a]\nfoo: 1", "unknown key"),
        ("[1, 2", "not valid YAML"),
        ("- just a list", "mapping"),
    ],
)
def test_bad_recipes_get_clear_errors(text, match):
    with pytest.raises(RecipeError, match=match):
        validate_recipe(Recipe.from_yaml(text))


def test_a_mistyped_parameter_gets_a_suggestion_and_the_list():
    """Top level: everything the method takes; per model: only per-model parameters."""
    top = "merge_method: ties\nbase_model: a\nmodels: [b]\nparameters: {lamda: 1}"
    with pytest.raises(RecipeError) as info:
        validate_recipe(Recipe.from_yaml(top))
    assert info.value.hint == (
        "did you mean 'lambda'? it takes weight, density, lambda, trim, normalize, rescale, "
        "rescale_mode, int8_mask"
    )
    per_model = "merge_method: ties\nbase_model: a\nmodels: [{model: b, parameters: {densty: 1}}]"
    with pytest.raises(RecipeError) as info:
        validate_recipe(Recipe.from_yaml(per_model))
    assert str(info.value).startswith("b: method 'ties' has no parameter(s) densty")
    assert info.value.hint == "did you mean 'density'? per model it takes weight, density"
