"""The `merger` command end to end on the demo models."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from core.checkpoints import open_checkpoint
from core.cli import main
from core.recipe import Recipe


def tensors(path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ckpt:
        return ckpt.state_dict()


def test_methods_json_lists_the_registry(capsys):
    assert main(["methods", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {m["name"] for m in data}
    assert {"linear", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties"} <= names
    ties = next(m for m in data if m["name"] == "ties")
    density = next(p for p in ties["params"] if p["name"] == "density")
    assert density["per_model"] and density["min"] == 0.0 and density["max"] == 1.0


def test_info_json(demo, capsys):
    assert main(["info", str(demo.base), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"].startswith("safetensors")
    assert data["tensors"] == 6
    assert data["parameters"] == 64 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10


def test_merge_task_arithmetic_matches_hand_formula(demo, tmp_path, capsys):
    out = tmp_path / "ta.safetensors"
    code = main(
        [
            "merge",
            "--method",
            "task_arithmetic",
            "--base",
            str(demo.base),
            str(demo.models["0-4"]),
            str(demo.models["5-9"]),
            "--set",
            "lambda=0.5",
            "--set",
            "weight=1.0,0.5",
            "-o",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    got = tensors(out)
    base, a, b = tensors(demo.base), tensors(demo.models["0-4"]), tensors(demo.models["5-9"])
    for name in base:
        want = base[name] + 0.5 * ((a[name] - base[name]) + 0.5 * (b[name] - base[name]))
        assert torch.allclose(got[name], want, atol=1e-6), name


def test_the_closing_line_names_the_output_and_a_folder_s_files(demo, tmp_path, capsys):
    models = [str(demo.models["0-4"]), str(demo.models["5-9"])]
    out = tmp_path / "avg.safetensors"
    assert main(["merge", "--method", "linear", *models, "-o", str(out), "--quiet"]) == 0
    assert re.fullmatch(rf"wrote {re.escape(str(out))} in [0-9.]+ s\n", capsys.readouterr().out)
    folder = tmp_path / "sharded"
    args = ["merge", "--method", "linear", *models, "-o", str(folder), "--shard-size", "20KB"]
    assert main([*args, "--quiet"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {folder} in ") and "model-00001-of-" in line
    assert str(tmp_path) not in line.split(": ", 1)[1]  # file names, not paths again


def test_output_records_recipe_and_sources(demo, tmp_path):
    out = tmp_path / "avg.safetensors"
    assert (
        main(
            [
                "merge",
                "--method",
                "linear",
                str(demo.models["0-4"]),
                str(demo.models["5-9"]),
                "-o",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    with open_checkpoint(out) as ckpt:
        meta = ckpt.metadata
    recipe = Recipe.from_yaml(meta["merger_recipe"])
    assert recipe.merge_method == "linear"
    sources = json.loads(meta["merger_sources"])
    assert len(sources) == 2 and all(len(s["sha256"]) == 64 for s in sources)


@pytest.mark.parametrize("name", ["task_arithmetic", "ties", "linear", "slerp"])
def test_demo_recipes_run_and_stored_recipe_reproduces(demo, tmp_path, name):
    out = tmp_path / f"{name}-out"
    assert main(["run", str(demo.recipes[name]), "-o", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").exists() and (out / "merger_recipe.yaml").exists()
    # the recipe stored beside the model reproduces the same tensors
    again = tmp_path / f"{name}-again.safetensors"
    assert main(["run", str(out / "merger_recipe.yaml"), "-o", str(again), "--quiet"]) == 0
    first, second = tensors(out), tensors(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_user_errors_are_one_line_without_traceback(demo, tmp_path):
    cases = [
        ["merge", "--method", "nope", str(demo.base), "-o", str(tmp_path / "x.safetensors")],
        ["merge", "--method", "ties", str(demo.base), "-o", str(tmp_path / "x.safetensors")],
        ["info", str(tmp_path / "missing.safetensors")],
        [
            "merge",
            "--method",
            "linear",
            str(demo.base),
            str(demo.seeds[0]),
            "-o",
            str(tmp_path / "x.safetensors"),
        ],
        [
            "merge",
            "--method",
            "linear",
            str(demo.base),
            str(demo.models["0-4"]),
            "-o",
            str(demo.base),
            "--overwrite",
        ],
    ]
    for args in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "core.cli", *args], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 1, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("merger: error:"), proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_bad_set_value_names_the_parameter(demo, tmp_path, capsys):
    code = main(
        [
            "merge",
            "--method",
            "ties",
            "--base",
            str(demo.base),
            str(demo.models["0-4"]),
            "--set",
            "density=2",
            "-o",
            str(tmp_path / "o.safetensors"),
        ]
    )
    assert code == 1
    assert "density" in capsys.readouterr().err


def test_eval_reports_accuracy_of_merged_model(demo, tmp_path, capsys):
    out = tmp_path / "ta"
    assert main(["run", str(demo.recipes["task_arithmetic"]), "-o", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert (
        main(["eval", str(demo.models["0-4"]), str(out), "--data", str(demo.data), "--json"]) == 0
    )
    finetuned, merged = json.loads(capsys.readouterr().out)
    assert merged["n"] == finetuned["n"] == 449
    # the fine-tune forgot half the digits; adding both task vectors to the base recovers them
    assert merged["accuracy"] > finetuned["accuracy"] + 0.1


def test_eval_says_which_architecture_ran_and_keeps_the_rows_that_worked(demo, tmp_path, capsys):
    """A detected architecture is a guess from names and shapes: the table says so. A
    broken file among the models is reported without losing the other rows."""
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"junk")
    args = ["eval", str(demo.base), str(broken), str(demo.models["0-4"]), "--data", str(demo.data)]
    assert main(args) == 1
    captured = capsys.readouterr()
    notes = [line for line in captured.out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "architecture mlp detected" in notes[0]  # once, not per row
    header, *rows = [line for line in captured.out.strip().splitlines() if line not in notes]
    assert header.split()[:4] == ["model", "architecture", "loss", "accuracy"]
    assert [r.split()[0] for r in rows] == [str(demo.base), str(demo.models["0-4"])]
    assert all(r.split()[1:3] == ["mlp", "(detected)"] for r in rows)
    assert captured.err.startswith(f"merger: error: {broken}")
    assert main([*args[:2], *args[3:], "--arch", "mlp"]) == 0
    assert "(detected)" not in capsys.readouterr().out  # named, not guessed


def test_exported_copy_records_its_dtype_and_its_recipe_reproduces_it(demo, tmp_path):
    from core.export import export_checkpoint

    merged = tmp_path / "m"
    assert main(["run", str(demo.recipes["task_arithmetic"]), "-o", str(merged), "--quiet"]) == 0
    saved = tmp_path / "saved"
    export_checkpoint(merged, saved, dtype="bfloat16", shard_size=10_000)
    with open_checkpoint(saved) as ckpt:
        assert all(i.dtype == torch.bfloat16 for i in ckpt.infos())
        assert len(ckpt.files) > 1  # sharded
    again = tmp_path / "again.safetensors"
    assert main(["run", str(saved / "merger_recipe.yaml"), "-o", str(again), "--quiet"]) == 0
    first, second = tensors(saved), tensors(again)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_data_that_does_not_fit_the_model_is_a_user_error(demo, tmp_path, capsys):
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.random.rand(10, 32).astype("float32"), y=np.zeros(10, dtype="int64"))
    a, b = demo.seeds
    cases = [
        ["eval", str(demo.base), "--data", str(bad)],
        [
            "merge",
            "--method",
            "activation_matching",
            str(a),
            str(b),
            "--data",
            str(bad),
            "-o",
            str(tmp_path / "am.safetensors"),
        ],
    ]
    for args in cases:
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert f"{bad}: the data's examples are shaped [32]" in err, err
        assert "takes 64 features per example" in err, err
    assert not (tmp_path / "am.safetensors").exists()


def test_a_filter_that_matches_nothing_is_reported(demo, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"merge_method: task_arithmetic\nbase_model: {demo.base}\n"
        f"models: [{demo.models['0-4']}]\n"
        "parameters: {lambda: [{filter: self_attn, value: 0.3}, {value: 1.0}]}\n"
    )
    assert main(["run", str(recipe), "-o", str(tmp_path / "o.safetensors"), "--quiet"]) == 0
    assert "filter 'self_attn' of 'lambda' matches no tensor" in capsys.readouterr().out


def test_version_answers_without_loading_torch(capsys):
    """`merger --version` is instant: the engine and torch are not imported for it."""
    from core import __version__

    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "core.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"merger {__version__}\n"
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    assert "torch" not in imported and "numpy" not in imported
    with pytest.raises(SystemExit) as info:  # the full parser answers it too
        main(["--debug", "--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"merger {__version__}\n"


def test_config_json_says_the_dtype_written(demo, tmp_path):
    """Hugging Face loaders read torch_dtype: a bfloat16 merge (or export) must say so."""
    import shutil

    from core.export import export_checkpoint

    folders = []
    for name in ("0-4", "5-9"):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(demo.models[name], folder / "model.safetensors")
        (folder / "config.json").write_text('{"model_type": "mlp", "torch_dtype": "float32"}')
        folders.append(str(folder))
    out = tmp_path / "merged"
    args = ["merge", "--method", "linear", *folders, "-o", str(out), "--out-dtype", "bfloat16"]
    assert main([*args, "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    export_checkpoint(out, tmp_path / "half", dtype="float16")
    config = json.loads((tmp_path / "half" / "config.json").read_text())
    assert config == {"model_type": "mlp", "torch_dtype": "float16"}


def test_sources_are_recorded_by_absolute_path(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(demo.models["0-4"].parent)
    out = tmp_path / "avg.safetensors"
    names = [demo.models["0-4"].name, demo.models["5-9"].name]  # relative to the cwd
    assert main(["merge", "--method", "linear", *names, "-o", str(out), "--quiet"]) == 0
    with open_checkpoint(out) as ckpt:
        sources = json.loads(ckpt.metadata["merger_sources"])
    assert [s["path"] for s in sources] == [str(demo.models[k].resolve()) for k in ("0-4", "5-9")]
    assert all(len(s["sha256"]) == 64 for s in sources)


def test_info_counts_tied_tensors_once(tmp_path, capsys):
    """A .pt whose output head shares the embedding's tensor (weight tying) has 1,600
    parameters plus the bias, as torch counts them, and says which names are tied."""
    shared = torch.randn(100, 16)
    path = tmp_path / "tied.pt"
    torch.save({"embed.weight": shared, "head.weight": shared, "head.bias": torch.zeros(100)}, path)
    assert main(["info", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] == 1600 + 100
    assert data["bytes"] == (1600 + 100) * 4  # the shared tensor is stored once too
    assert data["tied"] == [["embed.weight", "head.weight"]]
    assert main(["info", str(path)]) == 0
    assert "'embed.weight', 'head.weight' share one tensor" in capsys.readouterr().out


def test_a_folder_output_takes_the_first_config_there_is_and_says_so(tmp_path, capsys):
    from safetensors.torch import save_file

    save_file({"w": torch.randn(3, 3)}, tmp_path / "bare.safetensors")
    for name, kind in (("hf", "llama"), ("hf2", "mistral")):
        (tmp_path / name).mkdir()
        save_file({"w": torch.randn(3, 3)}, tmp_path / name / "model.safetensors")
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": kind}))
    merge = ["merge", "--method", "linear", "--quiet"]
    assert (
        main(
            [
                *merge,
                str(tmp_path / "bare.safetensors"),
                str(tmp_path / "hf"),
                "-o",
                str(tmp_path / "o1"),
            ]
        )
        == 0
    )
    assert "has no config.json: a folder output takes" in capsys.readouterr().out
    assert json.loads((tmp_path / "o1" / "config.json").read_text())["model_type"] == "llama"
    assert (
        main([*merge, str(tmp_path / "hf"), str(tmp_path / "hf2"), "-o", str(tmp_path / "o2")]) == 0
    )
    assert "different model types (llama, mistral)" in capsys.readouterr().out
