"""`merger merge --save-recipe FILE`: written only after the merge worked, only as YAML,
and never over an input or an existing file unless --overwrite says so."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.cli import main
from core.recipe import Recipe


def linear(demo, out, recipe, *extra: str) -> list[str]:
    a, b = demo.models["0-4"], demo.models["5-9"]
    return [
        "merge",
        "--method",
        "linear",
        str(a),
        str(b),
        "-o",
        str(out),
        "--save-recipe",
        str(recipe),
        "--quiet",
        *extra,
    ]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("merger: error:") and "\n" not in err, err
    return err


def test_the_recipe_is_written_after_the_merge_and_reproduces_it(demo, tmp_path):
    out, recipe = tmp_path / "m.safetensors", tmp_path / "m.yaml"
    assert main(linear(demo, out, recipe)) == 0
    assert Recipe.load(recipe).merge_method == "linear"
    again = tmp_path / "again.safetensors"
    assert main(["run", str(recipe), "-o", str(again), "--quiet"]) == 0
    assert digest(again) == digest(out)


def test_a_recipe_named_like_a_model_is_refused_and_the_input_survives(demo, tmp_path, capsys):
    victim = shutil.copy(demo.models["5-9"], tmp_path / "victim.safetensors")
    before = digest(victim)
    out = tmp_path / "m.safetensors"
    assert main(linear(demo, out, victim)) == 1
    line = error_line(capsys)
    assert "victim.safetensors" in line and "*.yaml" in line
    assert digest(victim) == before and not out.exists()


def test_an_input_model_given_as_the_recipe_file_is_untouched(demo, tmp_path, capsys):
    """The report that led here: --save-recipe naming one of the merge's own inputs."""
    a = shutil.copy(demo.models["0-4"], tmp_path / "a.safetensors")
    b = shutil.copy(demo.models["5-9"], tmp_path / "b.safetensors")
    before = digest(b)
    args = ["merge", "--method", "linear", str(a), str(b), "-o", str(tmp_path / "m.safetensors")]
    assert main([*args, "--save-recipe", str(b), "--quiet"]) == 1
    error_line(capsys)
    assert digest(b) == before


def test_an_existing_recipe_is_replaced_only_with_overwrite(demo, tmp_path, capsys):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("my notes\n")
    assert main(linear(demo, tmp_path / "m.safetensors", recipe)) == 1
    line = error_line(capsys)
    assert "already exists" in line and "--overwrite" in line
    assert recipe.read_text() == "my notes\n"
    assert not (tmp_path / "m.safetensors").exists()  # refused before any work
    assert main(linear(demo, tmp_path / "m.safetensors", recipe, "--overwrite")) == 0
    assert Recipe.load(recipe).merge_method == "linear"


def test_a_failed_merge_leaves_no_recipe(demo, tmp_path, capsys):
    odd = tmp_path / "odd.safetensors"
    save_file({"layers.0.weight": torch.zeros(3, 3)}, odd)
    recipe = tmp_path / "r.yaml"
    args = ["merge", "--method", "linear", str(demo.models["0-4"]), str(odd)]
    assert main([*args, "-o", str(tmp_path / "m.safetensors"), "--save-recipe", str(recipe)]) == 1
    error_line(capsys)
    assert not recipe.exists()


@pytest.mark.parametrize("name", ["m.safetensors", "folder"])
def test_the_recipe_cannot_be_the_output(demo, tmp_path, capsys, name):
    target = tmp_path / name
    assert main(linear(demo, target, target)) == 1
    error_line(capsys)
    assert not target.exists()


def test_the_recipes_missing_folder_is_created_as_the_outputs_is(demo, tmp_path):
    out, recipe = tmp_path / "new" / "m.safetensors", tmp_path / "recipes" / "sub" / "m.yaml"
    assert main(linear(demo, out, recipe)) == 0
    assert Recipe.load(recipe).merge_method == "linear" and out.exists()


def test_a_recipe_under_a_file_is_refused_before_the_merge(demo, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "m.safetensors"
    assert main(linear(demo, out, tmp_path / "afile" / "r.yaml")) == 1
    assert "is a file, not a folder" in error_line(capsys)
    assert not out.exists()  # nothing merged for a recipe that could not be written


def test_a_recipe_that_fails_after_the_merge_says_the_model_is_kept(demo, tmp_path, capsys):
    """A place that passes the checks but takes no file (/proc) fails only when written:
    the error must say the merged model is there, not leave the user to guess."""
    if not Path("/proc/self").is_dir() or not os.access("/proc", os.W_OK):
        pytest.skip("needs Linux's /proc, which only root may try to write into")
    out = tmp_path / "m.safetensors"
    assert main(linear(demo, out, "/proc/merger-recipe.yaml")) == 1
    line = error_line(capsys)
    assert "the recipe could not be written" in line and f"written to {out} and is kept" in line
    assert out.exists()
    again = tmp_path / "again.safetensors"
    assert main([*linear(demo, again, "/proc/merger-recipe.yaml"), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)  # one document: the error, not both
    assert "the recipe could not be written" in document["error"]["message"]
