"""Bad recipes and models that cannot be merged together (kind "recipe")."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from corpus_base import Case, good_safetensors, good_state, raw_safetensors


def make_models(root: Path) -> dict[str, Path]:
    """A good base and two fine-tunes, plus models that differ from them in one way."""
    d = root / "models"
    d.mkdir()
    base = good_state()
    gen = torch.Generator().manual_seed(1)

    def tuned(scale: float) -> dict[str, torch.Tensor]:
        return {
            k: v + scale * torch.randn(v.shape, generator=gen)
            if v.is_floating_point()
            else v.clone()
            for k, v in base.items()
        }

    states = {"base": base, "ft1": tuned(0.1), "ft2": tuned(0.2)}
    w = "layers.0.weight"
    bad = {k: v.clone() for k, v in states["ft1"].items()}
    states["missing_key"] = {k: v for k, v in bad.items() if k != "layers.1.bias"}
    states["extra_key"] = {**bad, "extra.weight": torch.ones(3)}
    states["wrong_shape"] = {**bad, w: torch.ones(3, 4)}
    states["int_dtype"] = {**bad, w: torch.ones(4, 3, dtype=torch.int64)}
    states["fp16"] = {k: v.half() if v.is_floating_point() else v for k, v in bad.items()}
    nan = {k: v.clone() for k, v in bad.items()}
    nan[w][1, 2] = float("nan")
    states["nan_input"] = nan
    inf = {k: v.clone() for k, v in base.items()}
    inf["layers.1.bias"][0] = float("inf")
    states["inf_base"] = inf
    half_nan = {k: v.clone() for k, v in states["fp16"].items()}
    half_nan["layers.1.weight"][0, 0] = float("-inf")
    states["nan_fp16"] = half_nan
    paths = {}
    for name, state in states.items():
        paths[name] = good_safetensors(d / f"{name}.safetensors", state)
    paths["no_tensors"] = raw_safetensors(d / "no_tensors.safetensors", b"{}      ", b"")
    torch.save({"epoch": 1}, d / "no_tensors.pt")
    paths["no_tensors_pt"] = d / "no_tensors.pt"
    return paths


def _recipe(
    d: Path,
    cases: list[Case],
    id: str,
    cat: str,
    content,
    *mention: str,
    expect: str = "error",
    marker: Path | None = None,
) -> None:
    path = d / f"{id}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(yaml.safe_dump(content, sort_keys=False))
    cases.append(Case(f"recipe_{id}", cat, "recipe", path, mention, expect, marker))


def model_cases(root: Path, m: dict[str, Path], cases: list[Case]) -> None:
    """Recipes that are fine but whose models cannot be merged."""
    d = root / "recipes_models"
    d.mkdir()
    b, f1 = str(m["base"]), str(m["ft1"])

    def ta(*models: str, base: str = b, method: str = "task_arithmetic") -> dict:
        return {
            "merge_method": method,
            "base_model": base,
            "models": [{"model": x} for x in models],
        }

    cat = "models that do not fit"
    _recipe(
        d, cases, "missing_key", cat, ta(f1, str(m["missing_key"])), "missing_key", "layers.1.bias"
    )
    _recipe(d, cases, "extra_key", cat, ta(f1, str(m["extra_key"])), expect="either")
    _recipe(
        d, cases, "wrong_shape", cat, ta(str(m["wrong_shape"])), "wrong_shape", "layers.0.weight"
    )
    _recipe(d, cases, "int_vs_float", cat, ta(str(m["int_dtype"])), "int_dtype", "layers.0.weight")
    _recipe(d, cases, "fp16_vs_fp32", cat, ta(str(m["fp16"])), expect="either")
    _recipe(d, cases, "nan_input", cat, ta(str(m["nan_input"])), "nan_input", "layers.0.weight")
    _recipe(
        d,
        cases,
        "nan_input_linear",
        cat,
        {"merge_method": "linear", "models": [f1, str(m["nan_input"])]},
        "nan_input",
        "layers.0.weight",
    )
    _recipe(d, cases, "inf_base", cat, ta(f1, base=str(m["inf_base"])), "inf_base", "layers.1.bias")
    _recipe(
        d,
        cases,
        "inf_fp16_ties",
        cat,
        ta(str(m["nan_fp16"]), method="ties"),
        "nan_fp16",
        "layers.1.weight",
    )
    _recipe(
        d,
        cases,
        "nan_slerp",
        cat,
        {"merge_method": "slerp", "base_model": b, "models": [str(m["nan_input"])]},
        "nan_input",
        "layers.0.weight",
    )
    _recipe(d, cases, "no_tensors_base", cat, ta(f1, base=str(m["no_tensors"])), "no_tensors")
    _recipe(d, cases, "no_tensors_input", cat, ta(str(m["no_tensors"])), "no_tensors")
    _recipe(d, cases, "no_tensors_pickle", cat, ta(str(m["no_tensors_pt"])), "no_tensors.pt")
    _recipe(
        d,
        cases,
        "missing_model",
        cat,
        ta(str(root / "nowhere" / "gone.safetensors")),
        "gone.safetensors",
    )
    _recipe(
        d,
        cases,
        "missing_base",
        cat,
        ta(f1, base=str(root / "no_base.safetensors")),
        "no_base.safetensors",
    )


def recipe_cases(root: Path, m: dict[str, Path], cases: list[Case]) -> None:
    """Recipes that are wrong in themselves: syntax, methods, parameters, keys."""
    d = root / "recipes"
    d.mkdir()
    markers = root / "markers"
    markers.mkdir(exist_ok=True)
    b, f1, f2 = str(m["base"]), str(m["ft1"]), str(m["ft2"])

    def ta(params: dict | None = None, per_model: dict | None = None, **extra) -> dict:
        doc = {
            "merge_method": "task_arithmetic",
            "base_model": b,
            "models": [
                {"model": f1, **({"parameters": per_model} if per_model else {})},
                {"model": f2},
            ],
        }
        if params is not None:
            doc["parameters"] = params
        return {**doc, **extra}

    ties = {**ta(), "merge_method": "ties"}
    cat = "recipe syntax"
    _recipe(
        d,
        cases,
        "yaml_syntax",
        cat,
        "merge_method: linear\nmodels: [a, b\n  - c: :\n",
        "yaml_syntax.yaml",
    )
    _recipe(d, cases, "yaml_tabs", cat, "merge_method: linear\n\tmodels: []\n", "yaml_tabs.yaml")
    _recipe(d, cases, "yaml_list", cat, "- merge_method: linear\n", "yaml_list.yaml")
    _recipe(d, cases, "yaml_scalar", cat, "just some text\n", "yaml_scalar.yaml")
    _recipe(d, cases, "yaml_empty", cat, "", "yaml_empty.yaml")
    _recipe(d, cases, "yaml_binary", cat, b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "yaml_binary.yaml")
    mark = markers / "yaml_tag"
    _recipe(
        d,
        cases,
        "yaml_python_tag",
        cat,
        f"merge_method: !!python/object/apply:os.system ['touch {mark}']\nmodels: [{f1}]\n",
        "yaml_python_tag.yaml",
        marker=mark,
    )
    cat = "recipe structure"
    _recipe(d, cases, "no_method", cat, {"models": [f1]}, "merge_method")
    _recipe(d, cases, "unknown_method", cat, {**ta(), "merge_method": "frobnicate"}, "frobnicate")
    _recipe(d, cases, "unknown_key", cat, {**ta(), "tokenizer_sauce": 1}, "tokenizer_sauce")
    _recipe(d, cases, "slices", cat, {**ta(), "slices": []}, "slices")
    _recipe(d, cases, "models_not_list", cat, {**ta(), "models": f1}, "models")
    _recipe(d, cases, "model_without_path", cat, {**ta(), "models": [{"weight": 1}]}, "model")
    _recipe(d, cases, "model_is_number", cat, {**ta(), "models": [5]}, "models[0]")
    _recipe(d, cases, "no_models", cat, {**ta(), "models": []}, "task_arithmetic")
    _recipe(d, cases, "ties_without_base", cat, {**ties, "base_model": None}, "base")
    _recipe(
        d,
        cases,
        "slerp_three_models",
        cat,
        {"merge_method": "slerp", "base_model": b, "models": [f1, f2, str(m["extra_key"])]},
        "slerp",
    )
    _recipe(d, cases, "seed_string", cat, {**ta(), "seed": "forty-two"}, "seed")
    _recipe(d, cases, "dtype_unknown", cat, {**ta(), "dtype": "int7"}, "int7")
    _recipe(d, cases, "params_not_mapping", cat, ta(params=[1, 2]), "parameters")
    _recipe(
        d,
        cases,
        "model_params_list",
        cat,
        {**ta(), "models": [{"model": f1, "parameters": [0.5]}]},
        "parameters",
    )
    cat = "parameter values"
    _recipe(d, cases, "lambda_string", cat, ta({"lambda": "abc"}), "lambda")
    _recipe(d, cases, "lambda_nan", cat, ta({"lambda": float("nan")}), "lambda")
    _recipe(d, cases, "lambda_huge", cat, ta({"lambda": 1e400}), "lambda")
    _recipe(d, cases, "lambda_out_of_range", cat, ta({"lambda": 1000}), "lambda")
    _recipe(d, cases, "lambda_dict", cat, ta({"lambda": {"a": 1}}), "lambda")
    _recipe(d, cases, "lambda_bool", cat, ta({"lambda": True}), "lambda")
    _recipe(
        d,
        cases,
        "density_out_of_range",
        cat,
        {**ties, "models": [{"model": f1, "parameters": {"density": 1.5}}]},
        "density",
    )
    _recipe(
        d,
        cases,
        "density_negative",
        cat,
        {**ties, "models": [{"model": f1, "parameters": {"density": -0.1}}]},
        "density",
    )
    _recipe(d, cases, "weight_string", cat, ta(per_model={"weight": "heavy"}), "weight")
    _recipe(d, cases, "normalize_two", cat, ta({"normalize": 2}), "normalize")
    _recipe(d, cases, "unknown_param", cat, ta({"densty": 0.5}), "densty")
    _recipe(d, cases, "global_param_per_model", cat, ta(per_model={"lambda": 0.5}), "lambda")
    _recipe(
        d,
        cases,
        "rescale_mode_bad",
        cat,
        {**ties, "parameters": {"rescale_mode": "l7"}},
        "rescale_mode",
    )
    _recipe(d, cases, "gradient_strings", cat, ta({"lambda": ["a", "b"]}), "lambda")
    _recipe(d, cases, "gradient_empty", cat, ta({"lambda": []}), "lambda")
    _recipe(d, cases, "gradient_nested", cat, ta({"lambda": [[0.1, 0.2], 0.3]}), "lambda")
    _recipe(d, cases, "gradient_out_of_range", cat, ta({"lambda": [0, 500]}), "lambda")
    _recipe(
        d,
        cases,
        "filter_no_fallback",
        cat,
        ta({"lambda": [{"filter": "no_such_layer", "value": 0.3}]}),
        "lambda",
        expect="either",  # valid in mergekit: unmatched tensors take the default
    )
    _recipe(d, cases, "filter_without_value", cat, ta({"lambda": [{"filter": "layers"}]}), "lambda")
    _recipe(
        d,
        cases,
        "model_level_gradient",
        cat,
        {
            "merge_method": "weight_matching",
            "models": [f1, f2],
            "arch": "mlp",
            "parameters": {"lambda": [0.1, 0.9]},
        },
        "lambda",
    )
    _recipe(
        d,
        cases,
        "max_iter_fraction",
        cat,
        {
            "merge_method": "weight_matching",
            "models": [f1, f2],
            "arch": "mlp",
            "parameters": {"max_iter": 1.5},
        },
        "max_iter",
    )
    _recipe(
        d,
        cases,
        "data_missing_file",
        cat,
        {
            "merge_method": "activation_matching",
            "models": [f1, f2],
            "arch": "mlp",
            "data": str(root / "no_data.npz"),
        },
        "no_data.npz",
    )
    cat = "code payload"
    mark = markers / "arch_py"
    evil = d / "evil_model.py"
    evil.write_text(f"open({str(mark)!r}, 'w').close()\n\ndef make():\n    return None\n")
    _recipe(
        d,
        cases,
        "arch_python_file",
        cat,
        {"merge_method": "weight_matching", "models": [f1, f2], "arch": f"{evil}:make"},
        "evil_model.py",
        marker=mark,
    )


def build_recipe_cases(root: Path) -> list[Case]:
    cases: list[Case] = []
    models = make_models(root)
    model_cases(root, models, cases)
    recipe_cases(root, models, cases)
    return cases
