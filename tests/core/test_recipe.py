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


def test_a_yaml_error_says_where_on_one_line():
    """The parser's excerpt with a '^' under the column only works over several lines; on
    the one line errors get, the line number, the column and that line's text do."""
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml("merge_method: [ties\nmodels:\n  - model: a\n")
    message = info.value.message
    assert "\n" not in message and "^" not in message
    assert message == (
        "not valid YAML: expected ',' or ']', but got ':' at line 2, column 7 ('models:'), "
        "while parsing a flow sequence that starts at line 1"
    )


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


@pytest.mark.parametrize(
    "entry, message, close",
    [
        (
            "{model: b, paramters: {weight: 2}}",
            "models[1] (b): unknown key(s) paramters",
            "parameters",
        ),
        (
            "{model: b, parameters: {weight: [{fliter: mlp, value: 0.5}, {value: 1}]}}",
            "b: parameter 'weight': an entry has unknown key(s) fliter",
            "filter",
        ),
        (
            "{model: b, parameters: {weight: [{filter: mlp, valeu: 0.5}, {value: 1}]}}",
            "b: parameter 'weight': an entry has unknown key(s) valeu",
            "value",
        ),
    ],
)
def test_typos_inside_model_entries_are_refused_not_ignored(entry, message, close):
    """A misspelt `parameters` dropped the weights; a misspelt `filter` turned its entry
    into the fallback for every tensor. Both merged without a word before."""
    text = f"merge_method: task_arithmetic\nbase_model: a\nmodels: [a, {entry}]"
    with pytest.raises(RecipeError) as info:
        validate_recipe(Recipe.from_yaml(text))
    assert message in str(info.value)
    assert info.value.hint.startswith(f"did you mean '{close}'?")


def test_a_filter_entry_without_a_value_is_refused_naming_the_model():
    text = "merge_method: linear\nmodels: [a, {model: b, parameters: {weight: [{filter: x}]}}]"
    with pytest.raises(RecipeError, match="b: parameter 'weight': an entry has no 'value'"):
        validate_recipe(Recipe.from_yaml(text))


def test_model_counts_mention_a_base_only_for_methods_that_take_one():
    with pytest.raises(RecipeError) as info:
        validate_recipe(Recipe.from_yaml("merge_method: linear\nmodels: []"))
    assert "needs at least 1 input model(s), got 0" in str(info.value)
    with pytest.raises(RecipeError) as info:
        validate_recipe(Recipe.from_yaml("merge_method: ties\nbase_model: a\nmodels: []"))
    assert "input model(s) besides the base, got 0" in str(info.value)


def test_a_negative_weight_under_ties_normalize_is_flagged():
    """Divided by the agreeing weights' sum, a lone -1 cancels itself: say so."""
    from core.methods import REGISTRY
    from core.validate import sign_notes

    def notes(text):
        recipe = Recipe.from_yaml(text)
        return sign_notes(recipe, REGISTRY.get(recipe.merge_method))

    negative = "base_model: a\nmodels: [{model: b, parameters: {weight: -1}}, {model: c}]"
    assert "b: a negative weight does not subtract" in notes(f"merge_method: ties\n{negative}")[0]
    assert notes(f"merge_method: ties\nparameters: {{normalize: false}}\n{negative}") == []
    assert notes(f"merge_method: task_arithmetic\n{negative}") == []
    assert notes("merge_method: ties\nbase_model: a\nmodels: [{model: b}]") == []


def test_a_model_file_given_as_a_recipe_says_where_its_recipe_is(tmp_path):
    model = tmp_path / "merged.safetensors"
    model.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(RecipeError, match="this is a model file, not a recipe") as info:
        Recipe.load(model)
    assert f"merger info {model}" in info.value.hint


def notes_for(text: str) -> list[str]:
    from core.validate import unused_settings

    recipe = Recipe.from_yaml(text)
    return unused_settings(recipe, validate_recipe(recipe))


def test_settings_a_method_ignores_are_noted():
    linear = notes_for(
        "merge_method: linear\nbase_model: c\nmodels: [a, b]\ndata: digits\narch: mlp"
    )
    assert linear == [
        "method 'linear' uses no base model: base_model c is not used "
        "(list it under models to average it in)",
        "method 'linear' runs no data: data digits is not used",
        "method 'linear' needs no architecture: arch mlp is not used",
    ]
    base_weight = notes_for(
        "merge_method: task_arithmetic\nbase_model: c\n"
        "models: [{model: c, parameters: {weight: 5}}, a]"
    )
    assert len(base_weight) == 1 and base_weight[0].startswith("c: the base model's parameters")
    # what each method uses draws no note
    assert notes_for("merge_method: linear\nbase_model: a\nmodels: [a, b]") == []
    assert notes_for("merge_method: weight_matching\nmodels: [a, b]\narch: mlp\ndata: d.npz") == []


def test_a_method_without_a_base_takes_a_listed_base_as_an_input():
    """`merger merge --method weight_matching --base A B` meant A and B, not B alone:
    A is the reference, and the note says so. A third model is refused, saying why."""
    recipe = Recipe.from_yaml("merge_method: weight_matching\nbase_model: a\nmodels: [a, b]")
    validate_recipe(recipe)  # two inputs, not one
    (note,) = notes_for("merge_method: weight_matching\nbase_model: a\nmodels: [a, b]")
    assert "base_model a is taken as its first input (model A" in note
    assert notes_for("merge_method: weight_matching\nbase_model: b\nmodels: [a, b]") == []
    with pytest.raises(RecipeError, match="base c counts as one"):
        validate_recipe(
            Recipe.from_yaml("merge_method: weight_matching\nbase_model: c\nmodels: [c, a, b]")
        )


def test_mergekits_slerp_example_with_whole_model_slices_runs_as_models(tmp_path):
    """mergekit's own SLERP example lists the models as one slice of layer_range [0, n]:
    the same merge as a `models` recipe. A range short of the models' layers, or several
    slices, would be a frankenmerge, refused with the reason."""
    import torch
    from safetensors.torch import save_file

    from core.checkpoints import open_checkpoint
    from core.merge import run_merge

    gen = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        state = {f"model.layers.{i}.mlp.weight": torch.randn(4, 4, generator=gen) for i in range(3)}
        state["model.embed_tokens.weight"] = torch.randn(8, 4, generator=gen)
        save_file(state, tmp_path / f"{name}.safetensors")
    sliced = (
        "slices:\n  - sources:\n"
        f"      - model: {tmp_path / 'a.safetensors'}\n        layer_range: [0, 3]\n"
        f"      - model: {tmp_path / 'b.safetensors'}\n        layer_range: [0, 3]\n"
        f"merge_method: slerp\nbase_model: {tmp_path / 'a.safetensors'}\n"
        "parameters:\n  t:\n    - filter: mlp\n      value: [0, 0.5, 1]\n    - value: 0.5\n"
        "dtype: float32\n"
    )
    listed = Recipe.from_yaml(sliced).with_(slice_layers=None)
    assert [m.model for m in listed.models] == [str(tmp_path / f"{n}.safetensors") for n in "ab"]
    run_merge(Recipe.from_yaml(sliced), tmp_path / "sliced.safetensors")
    run_merge(listed, tmp_path / "listed.safetensors")
    with (
        open_checkpoint(tmp_path / "sliced.safetensors") as x,
        open_checkpoint(tmp_path / "listed.safetensors") as y,
    ):
        assert all(torch.equal(x.get(k), y.get(k)) for k in x.keys())
    short = sliced.replace("[0, 3]", "[0, 2]")
    with pytest.raises(RecipeError, match=r"layer_range \[0, 2\], but the models have 3"):
        run_merge(Recipe.from_yaml(short), tmp_path / "short.safetensors")
    offset = sliced.replace("[0, 3]\n      - model", "[1, 3]\n      - model")
    with pytest.raises(RecipeError, match="frankenmerges"):
        Recipe.from_yaml(offset)


def test_the_built_in_data_set_is_named_in_any_case(tmp_path):
    """'Digits' was taken for a file and refused as missing."""
    for name in ("digits", "Digits", " DIGITS "):
        recipe = Recipe.from_yaml(f"merge_method: linear\nmodels: [a, b]\ndata: '{name}'\n")
        assert recipe.data == "digits"


def test_a_loaded_recipe_knows_its_file_for_messages(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("merge_method: linear\nmodels: [a.safetensors, b.safetensors]\narch: m.py:f\n")
    recipe = Recipe.load(path)
    assert recipe.source == str(path)
    with pytest.raises(RecipeError) as info:
        recipe.refuse_code()
    assert info.value.file == str(path) and "'arch: " in info.value.message
    # where it came from is not part of the recipe: not saved, not compared
    assert recipe == recipe.with_(source=None)
    assert "source" not in recipe.to_dict()
    Recipe.load(path).with_(arch="mlp").refuse_code()  # a family name runs no code
