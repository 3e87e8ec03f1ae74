"""A recipe whose `arch` names a Python file is refused by `merger run` without
--allow-code, and the message names the recipe (what the user ran), not a model."""

from __future__ import annotations

from safetensors.torch import save_file

from core.architectures.factories import mlp_state
from core.cli import main

MARKER_PY = 'open(__file__ + ".ran", "w").close()\n\ndef make():\n    raise SystemExit\n'


def write_recipe(tmp_path, method: str):
    for seed in (0, 1):
        save_file(mlp_state([8, 6, 3], seed=seed), str(tmp_path / f"m{seed}.safetensors"))
    (tmp_path / "net.py").write_text(MARKER_PY)
    recipe = tmp_path / f"{method}.yaml"
    recipe.write_text(
        f"merge_method: {method}\nmodels: [m0.safetensors, m1.safetensors]\narch: net.py:make\n"
    )
    return recipe


def test_the_refusal_names_the_recipe_and_runs_nothing(tmp_path, capsys):
    recipe = write_recipe(tmp_path, "weight_matching")
    out = tmp_path / "out.safetensors"
    assert main(["run", str(recipe), "-o", str(out)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"merger: error: {recipe}: 'arch: ")
    assert f"would import and run the Python file {tmp_path / 'net.py'}" in line
    assert "--allow-code" in line and "m0.safetensors" not in line
    assert not (tmp_path / "net.py.ran").exists() and not out.exists()


def test_a_method_that_needs_no_architecture_is_not_refused(tmp_path, capsys):
    """`linear` never builds the model: its recipe runs, and the file is never imported."""
    recipe = write_recipe(tmp_path, "linear")
    out = tmp_path / "out.safetensors"
    assert main(["run", str(recipe), "-o", str(out), "--quiet"]) == 0
    assert out.exists() and not (tmp_path / "net.py.ran").exists()
    capsys.readouterr()
