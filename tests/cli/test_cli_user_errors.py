"""Bad input at the command line, as a new user met it: each is one clear line (exit 1,
or 2 for a malformed command line), never a traceback, and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

from core.architectures.factories import mlp_state, vgg_state
from core.checkpoints import open_checkpoint
from core.cli import main
from core.data import load_npz
from core.errors import MergerError, RecipeError
from core.merge import run_merge, validate_recipe
from core.recipe import ModelEntry, Recipe


def tensors(path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ckpt:
        return ckpt.state_dict()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("merger: error:"), err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or folders a failed write could leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def linear(demo, out, *extra: str) -> list[str]:
    a, b = demo.models["0-4"], demo.models["5-9"]
    return ["merge", "--method", "linear", str(a), str(b), *extra, "-o", str(out), "--quiet"]


# -- 1. outputs are a .safetensors file or a folder ------------------------------------
@pytest.mark.parametrize("name", ["out.pt", "out.bin", "out.pth", "out.ckpt", "out.npz"])
def test_merge_refuses_an_output_named_like_another_model_file(demo, tmp_path, capsys, name):
    out = tmp_path / name
    assert main(linear(demo, out)) == 1
    line = one_error_line(capsys)
    assert str(out) in line and ".safetensors file or a folder" in line
    assert "folder name without" in line  # the hint says what to do
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["o.safetensor", "o.safetensros", "o.txt", "o.st"])
def test_a_misspelt_or_document_extension_is_refused_not_made_a_folder(
    demo, tmp_path, capsys, name
):
    out = tmp_path / name
    assert main(linear(demo, out)) == 1
    line = one_error_line(capsys)
    assert str(out) in line and ".safetensors" in line
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_existing_empty_folder_is_filled_without_overwrite(demo, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(linear(demo, out)) == 0
    assert (out / "model.safetensors").exists()
    assert main(linear(demo, out)) == 1  # now it holds a model: replacing it needs asking
    assert "already exists" in one_error_line(capsys)


def test_merge_refuses_an_upper_case_safetensors_extension(demo, tmp_path, capsys):
    out = tmp_path / "out.SAFETENSORS"
    assert main(linear(demo, out)) == 1
    assert "lower case" in one_error_line(capsys)
    assert not out.exists()


def test_run_refuses_a_bin_output_but_writes_a_folder_with_a_dotted_name(demo, tmp_path, capsys):
    out = tmp_path / "merged.bin"
    assert main(["run", str(demo.recipes["linear"]), "-o", str(out), "--quiet"]) == 1
    assert str(out) in one_error_line(capsys)
    assert not out.exists()
    folder = tmp_path / "merged.v2"  # not a file extension: a folder, as before
    assert main(["run", str(demo.recipes["linear"]), "-o", str(folder), "--quiet"]) == 0
    assert (folder / "model.safetensors").is_file()


def test_align_refuses_a_pt_output(demo, tmp_path, capsys):
    out = tmp_path / "aligned.pt"
    a, b = demo.seeds
    assert main(["align", str(a), str(b), "-o", str(out), "--quiet"]) == 1
    line = one_error_line(capsys)
    assert str(out) in line and ".safetensors file or a folder" in line
    assert not out.exists()


# -- 2. normalize with weights that cancel out -----------------------------------------
@pytest.mark.parametrize("weights", [(0, 0), (1, -1)])
def test_linear_weights_summing_to_zero_are_refused_with_normalize(demo, tmp_path, capsys, weights):
    out = tmp_path / "z.safetensors"
    given = "weight={},{}".format(*weights)
    assert main(linear(demo, out, "--set", given)) == 1
    line = one_error_line(capsys)
    assert "sum to 0" in line and "normalize=false" in line
    assert not out.exists() and leftovers(tmp_path) == []
    # what the message suggests works: without normalize, the weighted sum as it is
    assert main(linear(demo, out, "--set", given, "--set", "normalize=false")) == 0
    a, b, merged = tensors(demo.models["0-4"]), tensors(demo.models["5-9"]), tensors(out)
    wa, wb = weights
    assert all(torch.allclose(merged[k], wa * a[k] + wb * b[k], atol=1e-6) for k in a)


def test_a_weight_gradient_cancelling_at_one_layer_names_that_tensor(demo, tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    # both models get the weight 1 → 0 → -1 along the depth: 0 + 0 at the middle layer
    assert main(linear(demo, out, "--set", "weight=[1,-1]")) == 1
    line = one_error_line(capsys)
    assert "tensor 'layers.2." in line and "sum to 0" in line
    assert not out.exists() and leftovers(tmp_path) == []


def test_task_arithmetic_with_normalize_refuses_cancelling_weights(demo, tmp_path, capsys):
    out = tmp_path / "ta.safetensors"
    args = [
        "merge",
        "--method",
        "task_arithmetic",
        "--base",
        str(demo.base),
        str(demo.models["0-4"]),
        str(demo.models["5-9"]),
        "--set",
        "weight=0.5,-0.5",
        "--set",
        "normalize=true",
        "-o",
        str(out),
        "--quiet",
    ]
    assert main(args) == 1
    assert "sum to 0" in one_error_line(capsys)
    assert not out.exists()


def test_cancelling_weights_are_refused_before_any_tensor_is_read(demo):
    recipe = Recipe(
        merge_method="linear",
        models=(
            ModelEntry(str(demo.models["0-4"]), {"weight": 2.0}),
            ModelEntry(str(demo.models["5-9"]), {"weight": -2.0}),
        ),
    )
    with pytest.raises(RecipeError, match="sum to 0"):
        validate_recipe(recipe)
    validate_recipe(recipe.with_(parameters={"normalize": False}))  # fine without


# -- 3. demo and data files: user errors, not internal errors --------------------------
def test_demo_into_an_existing_file_is_a_user_error(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["demo", str(afile)]) == 1
    line = one_error_line(capsys)
    assert str(afile) in line and "is a file, not a folder" in line
    assert afile.read_text() == "mine"


def test_demo_at_an_existing_model_file_is_a_user_error(demo, tmp_path, capsys):
    folder = tmp_path / "existing_dir"
    folder.mkdir()
    model = folder / "base.safetensors"
    shutil.copy(demo.base, model)
    before = model.read_bytes()
    assert main(["demo", str(model)]) == 1
    assert str(model) in one_error_line(capsys)
    assert model.read_bytes() == before


def test_demo_never_replaces_files_it_did_not_write(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "recipes").mkdir(parents=True)
    (folder / "base.safetensors").write_text("my precious")
    (folder / "recipes" / "ties.yaml").write_text("mine")
    assert main(["demo", str(folder)]) == 1
    line = one_error_line(capsys)
    assert "already holds base.safetensors, recipes/ties.yaml" in line
    assert (folder / "base.safetensors").read_text() == "my precious"
    assert (folder / "recipes" / "ties.yaml").read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["base.safetensors", "recipes"]


def test_demo_reuses_its_own_folder(demo, capsys):
    assert main(["demo", str(demo.folder)]) == 0
    assert "already in" in capsys.readouterr().out


def test_demo_under_a_file_is_a_user_error(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["demo", str(afile / "sub")]) == 1
    line = one_error_line(capsys)
    assert str(afile / "sub") in line and "is a file, not a folder" in line  # ENOTDIR


def test_demo_in_a_read_only_folder_is_a_user_error(read_only_folder, capsys):
    ro = read_only_folder.require()
    assert main(["demo", str(ro / "demo")]) == 1
    line = one_error_line(capsys)
    assert str(ro / "demo") in line and "permission denied" in line
    assert list(ro.iterdir()) == []


def test_eval_with_a_npy_file_says_an_npz_is_expected(demo, tmp_path, capsys):
    data = tmp_path / "plain.npy"
    np.save(data, np.zeros((3, 64), dtype=np.float32))
    assert main(["eval", str(demo.base), "--data", str(data)]) == 1
    line = one_error_line(capsys)
    assert str(data) in line and ".npy" in line and ".npz archive with arrays x and y" in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "the file is empty"), (b"x,y\n1,2\n", "it is not a zip of numpy arrays")],
    ids=["empty", "text"],
)
def test_a_data_file_that_is_no_npz_is_refused_saying_what_it_is(tmp_path, content, expected):
    data = tmp_path / "data.npz"
    data.write_bytes(content)
    with pytest.raises(MergerError, match=rf"data\.npz: .*{expected}") as error:
        load_npz(data)
    assert "pickle" not in str(error.value)
    assert "numpy.savez" in str(error.value)


# -- 4. Ctrl+C at any time: one line, exit 130 -----------------------------------------
def test_ctrl_c_while_merger_starts_exits_130_without_traceback(demo):
    merger = Path(sys.executable).with_name("merger")
    if not merger.exists():
        pytest.skip("the `merger` console script is not installed in this environment")
    counted = 0
    for delay in (0.3, 0.6, 1.0, 0.15, 1.5):
        proc = subprocess.Popen(
            [str(merger), "info", str(demo.base)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, (delay, err)
        if proc.returncode == 0:  # it had finished before the signal: does not count
            continue
        assert proc.returncode == 130, (delay, proc.returncode, err)
        assert err.strip() == "merger: cancelled; nothing was written", (delay, err)
        counted += 1
    assert counted >= 2, "every run finished before Ctrl+C: nothing was tested"


def test_sigterm_during_a_merge_cancels_it_and_leaves_no_file(tmp_path):
    """`kill` or `timeout` mid-write: exit 143, the partial output (a hidden temporary
    beside it) removed, as for Ctrl+C."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        state = {f"w{k}": rng.standard_normal((1024, 1024), dtype=np.float32) for k in range(48)}
        paths.append(str(tmp_path / f"m{i}.safetensors"))
        save_numpy(state, paths[-1])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    command = [sys.executable, "-m", "core.cli", "merge", "--method", "linear", *paths]
    proc = subprocess.Popen(
        [*command, "-o", str(out_dir / "m.safetensors"), "--dtype", "float64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(out_dir.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # until the writer has created its temporary file
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the merge finished before the signal: nothing was tested")
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "cancelled; nothing was written" in err
    assert list(out_dir.iterdir()) == []


# -- 5. float64 models are merged in float64 -------------------------------------------
def float64_models(tmp_path):
    rng = np.random.default_rng(0)
    a = {"w": rng.standard_normal((40, 30)), "b": rng.standard_normal(30)}
    b = {k: rng.standard_normal(v.shape) for k, v in a.items()}
    save_numpy(a, str(tmp_path / "f64a.safetensors"))
    save_numpy(b, str(tmp_path / "f64b.safetensors"))
    return a, b


def test_float64_models_average_exactly(tmp_path):
    a, b = float64_models(tmp_path)
    out = tmp_path / "avg.safetensors"
    args = [
        "merge",
        "--method",
        "linear",
        str(tmp_path / "f64a.safetensors"),
        str(tmp_path / "f64b.safetensors"),
        "--set",
        "weight=0.5,0.5",
        "-o",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    merged = tensors(out)
    for k in a:
        assert merged[k].dtype == torch.float64
        np.testing.assert_array_equal(merged[k].numpy(), (a[k] + b[k]) / 2)


def test_a_float64_output_dtype_is_computed_in_float64(demo, tmp_path):
    out = tmp_path / "wide.safetensors"
    assert main(linear(demo, out, "--out-dtype", "float64")) == 0
    a, b, merged = tensors(demo.models["0-4"]), tensors(demo.models["5-9"]), tensors(out)
    for k in a:
        exact = (a[k].double() + b[k].double()) / 2
        assert merged[k].dtype == torch.float64
        assert torch.equal(merged[k], exact), k


@pytest.mark.parametrize("method", ["linear", "weight_matching"])
def test_values_beyond_float16_are_refused_not_saved_as_infinity(tmp_path, capsys, method):
    """Finite inputs whose merge leaves float16's range: the merge names the tensor and
    writes nothing, instead of a file that Merger itself would then refuse as broken."""
    big = {"layers.0.weight": torch.full((4, 3), 1e5), "layers.0.bias": torch.zeros(4)}
    big2 = {k: v * 2 for k, v in big.items()}
    paths = [tmp_path / "h1.safetensors", tmp_path / "h2.safetensors"]
    for path, state in zip(paths, (big, big2), strict=True):
        save_file(state, path)
    out = tmp_path / "h.safetensors"
    args = ["merge", "--method", method, *map(str, paths), "--out-dtype", "float16"]
    assert main([*args, "-o", str(out), "--quiet"]) == 1
    line = one_error_line(capsys)
    assert "tensor 'layers.0.weight'" in line and "float16's range" in line
    assert "bfloat16 or float32" in line
    assert not out.exists() and leftovers(tmp_path) == []
    assert main([*args[:-1], "bfloat16", "-o", str(out), "--quiet"]) == 0  # as the hint says


@pytest.mark.parametrize("out_dtype", [[], ["--out-dtype", "float32"]])
def test_a_merge_computed_in_float16_that_overflows_is_refused(tmp_path, capsys, out_dtype):
    """Two float16 models holding 60000 average to 60000, which float16 holds, but their
    sum in float16 is infinite: computing in float16 must not save that infinity."""
    paths = [tmp_path / "h1.safetensors", tmp_path / "h2.safetensors"]
    for path in paths:
        save_file({"w": torch.tensor([60000.0, 2.0], dtype=torch.float16)}, path)
    out = tmp_path / "h.safetensors"
    args = ["merge", "--method", "linear", *map(str, paths), *out_dtype, "-o", str(out)]
    assert main([*args, "--dtype", "float16", "--quiet"]) == 1
    line = one_error_line(capsys)
    assert "tensor 'w'" in line and "computing the merge in float16 overflowed" in line
    assert "--dtype float32 --out-dtype float16" in line
    assert not out.exists() and leftovers(tmp_path) == []
    assert main([*args, "--dtype", "float32", "--quiet"]) == 0  # as the hint says
    assert tensors(out)["w"][0].item() == 60000.0


def test_float8_checkpoints_merge(tmp_path, capsys):
    """torch has no isfinite for float8: the range checks read such tensors as float32."""
    fp8 = torch.float8_e4m3fn
    base = {"w": torch.tensor([1.0, -2.0, 0.5]).to(fp8)}
    tuned = {"w": torch.tensor([1.5, -1.0, 0.5]).to(fp8)}
    paths = [tmp_path / "base.safetensors", tmp_path / "ft.safetensors"]
    for path, state in zip(paths, (base, tuned), strict=True):
        save_file(state, path)
    out = tmp_path / "m.safetensors"
    args = ["merge", "--method", "task_arithmetic", "--base", str(paths[0]), str(paths[1])]
    assert main([*args, "--set", "lambda=0.5", "-o", str(out), "--quiet"]) == 0
    merged = tensors(out)["w"]
    assert merged.dtype == fp8
    assert merged.float().tolist() == [1.25, -1.5, 0.5]  # all exact in float8 e4m3
    # float8 e4m3 has no infinity: a cast saturates (1000 → 448), silently but for this
    save_file({"w": torch.tensor([400.0, -2.0, 0.5]).to(fp8)}, paths[1])  # 384 in e4m3
    big = tmp_path / "big.safetensors"
    assert main([*args, "--set", "lambda=2", "-o", str(big), "--quiet"]) == 1  # 1 + 2·383
    assert "exceed float8_e4m3fn's range (largest 448)" in one_error_line(capsys)
    assert not big.exists()


# -- 6. align names the model whose architecture differs -------------------------------
def test_align_of_two_architectures_names_the_model_that_differs(tmp_path, capsys):
    mlp, cnn = tmp_path / "mlp.safetensors", tmp_path / "cnn.safetensors"
    for path, state in ((mlp, mlp_state([64, 32, 10], prefix="inp.")), (cnn, vgg_state((8, "M")))):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    out = tmp_path / "x.safetensors"
    assert main(["align", str(mlp), str(cnn), "-o", str(out), "--quiet"]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"merger: error: {cnn}: lacks 4 tensor(s) that mlp.safetensors has")
    assert "same architecture" in line
    assert not out.exists()


def test_align_of_two_widths_names_the_model_that_differs(demo, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    b = demo.seeds[0]
    assert main(["align", str(demo.base), str(b), "-o", str(out), "--quiet"]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"merger: error: {b}: a different architecture")
    assert not out.exists()


# -- 7. device names ---------------------------------------------------------------------
@pytest.mark.parametrize("command", ["merge", "align"])
@pytest.mark.parametrize("device", ["tpu", "cudax", "cuda:"])
def test_an_unknown_device_is_refused_listing_the_choices(demo, tmp_path, capsys, command, device):
    out = tmp_path / "x.safetensors"
    if command == "merge":
        args = linear(demo, out, "--device", device)
    else:
        args = ["align", *map(str, demo.seeds), "-o", str(out), "--device", device]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"unknown device '{device}'" in err and "auto, cpu, cuda, cuda:N" in err
    assert "Traceback" not in err and not out.exists()


def test_run_merge_refuses_an_unknown_device_and_takes_known_ones_in_any_case(demo, tmp_path):
    recipe = Recipe(
        merge_method="linear",
        models=(ModelEntry(str(demo.models["0-4"])), ModelEntry(str(demo.models["5-9"]))),
    )
    out = tmp_path / "x.safetensors"
    with pytest.raises(MergerError, match="unknown device 'tpu'"):
        run_merge(recipe, out, device="tpu")
    assert not out.exists()
    run_merge(recipe, out, device="CPU")
    assert out.is_file()


def test_info_lists_tensors_by_name_with_numbers_in_order(tmp_path, capsys):
    """safetensors stores int64 buffers first; the listing reads like the model instead."""

    import torch
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file(
        {
            "layers.10.weight": torch.zeros(2, 2),
            "layers.2.weight": torch.zeros(2, 2),
            "bn.num_batches_tracked": torch.zeros((), dtype=torch.int64),
            "bn.bias": torch.zeros(2),
        },
        str(path),
    )
    assert main(["info", str(path), "--json"]) == 0
    names = [t["name"] for t in json.loads(capsys.readouterr().out)["tensor_list"]]
    assert names == ["bn.bias", "bn.num_batches_tracked", "layers.2.weight", "layers.10.weight"]


def test_with_json_an_error_is_also_a_json_object_on_stdout(demo, tmp_path, capsys):
    """Scripts read --json output from stdout: a failure must be parseable there too."""
    odd = tmp_path / "odd.safetensors"
    save_file({"layers.0.weight": torch.zeros(3, 3)}, odd)
    out = tmp_path / "x.safetensors"
    args = ["merge", "--method", "linear", str(demo.models["0-4"]), str(odd), "-o", str(out)]
    assert main([*args, "--json"]) == 1
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error["kind"] == "error" and error["file"] == str(odd)
    assert error["message"] in captured.err and error["hint"] in captured.err
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
    assert main(["info", str(broken), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["file"] == str(broken)
    twice = ["--set", "weight=1", "--set", "weight=2", "-o", str(out), "--json"]
    with pytest.raises(SystemExit) as code:
        main(["merge", "--method", "linear", str(odd), str(odd), *twice])
    assert code.value.code == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"]["kind"] == "usage"
    assert "see 'merger merge --help'" in captured.err  # the merge command's help


def test_a_mistyped_method_gets_a_suggestion(demo, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    args = ["merge", "--method", "tie", str(demo.base), str(demo.models["0-4"]), "-o", str(out)]
    assert main(args) == 1
    assert "unknown merge method 'tie'; did you mean 'ties'?" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("value", "text"), [("x", "'x' is not a whole number"), ("0", "must be at least 1, not 0")]
)
def test_a_bad_sweep_count_is_explained(demo, tmp_path, capsys, value, text):
    out = tmp_path / "x.safetensors"
    with pytest.raises(SystemExit) as exit_info:
        main(["align", *map(str, demo.seeds), "-o", str(out), "--max-iter", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --max-iter: {text}" in err and "_positive" not in err


@pytest.mark.parametrize(
    ("option", "text"),
    [
        (["--set", "density"], "argument --set: --set expects KEY=VALUE, not 'density'"),
        (["--dtype", "int8"], "argument --dtype: 'int8' is not a dtype; use one of float32"),
        (["--out-dtype", "int8"], "argument --out-dtype: 'int8' is not a dtype"),
        (["--shard-size", "abc"], "argument --shard-size: cannot read the size 'abc'"),
    ],
)
def test_malformed_option_values_exit_2_as_the_readme_says(demo, tmp_path, capsys, option, text):
    out = tmp_path / "x"
    with pytest.raises(SystemExit) as exit_info:
        main(linear(demo, out, *option))
    assert exit_info.value.code == 2
    assert text in one_error_line(capsys)
    assert not out.exists()


def test_align_by_activations_without_data_is_a_malformed_command_line(demo, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    with pytest.raises(SystemExit) as exit_info:
        main(["align", *map(str, demo.seeds), "-o", str(out), "--by", "activations"])
    assert exit_info.value.code == 2
    assert "--by activations needs --data" in capsys.readouterr().err


def test_mixed_input_dtypes_are_noted_with_the_one_written(tmp_path, capsys):
    save_file({"w": torch.randn(3, 3).bfloat16()}, tmp_path / "half.safetensors")
    save_file({"w": torch.randn(3, 3)}, tmp_path / "full.safetensors")
    out = tmp_path / "m.safetensors"
    args = ["merge", "--method", "linear", str(tmp_path / "half.safetensors")]
    assert main([*args, str(tmp_path / "full.safetensors"), "-o", str(out), "--quiet"]) == 0
    note = capsys.readouterr().out
    assert "dtypes differ (half.safetensors: bfloat16; full.safetensors: float32)" in note
    assert "takes half.safetensors's" in note and tensors(out)["w"].dtype == torch.bfloat16
    out2 = tmp_path / "m2.safetensors"
    extra = ["--out-dtype", "float32", "-o", str(out2), "--quiet"]
    assert main([*args, str(tmp_path / "full.safetensors"), *extra]) == 0
    assert "dtypes differ" not in capsys.readouterr().out  # chosen: nothing to say


def test_a_yaml_error_names_the_recipe_file(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("merge_method: linear\nmodels: [a, b\n")
    assert main(["run", str(recipe), "-o", str(tmp_path / "x.safetensors")]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"merger: error: {recipe}: not valid YAML")
    assert "at line 3, column 1" in line and "starts at line 2" in line
    assert "<unicode string>" not in line


def test_methods_lists_aliases(capsys):
    assert main(["methods"]) == 0
    assert "also called: average, weighted_average" in capsys.readouterr().out


def test_a_parameter_set_twice_is_a_malformed_command_line(demo, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(linear(demo, tmp_path / "x.safetensors", "--set", "weight=0.7", "--set", "weight=0.2"))
    assert exit_info.value.code == 2
    assert "--set weight= is given 2 times; give it once" in one_error_line(capsys)


def test_cuda_for_a_streaming_method_is_noted(demo, tmp_path, capsys):
    assert main(linear(demo, tmp_path / "x.safetensors", "--device", "cuda")) == 0
    assert "streams tensor by tensor on the CPU" in capsys.readouterr().out


def test_a_hugging_face_model_id_is_told_it_is_not_downloaded(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["merge", "--method", "linear", "mistralai/Mistral-7B-v0.1", "org/other-model"]
    assert main([*args, "-o", "m.safetensors", "--quiet"]) == 1
    line = one_error_line(capsys)
    assert "mistralai/Mistral-7B-v0.1: no such file or folder" in line
    assert "does not download model IDs" in line and "--local-dir Mistral-7B-v0.1" in line
    assert main(["info", "missing/model.safetensors"]) == 1
    line = one_error_line(capsys)
    assert "check the path" in line and "download" not in line
    (tmp_path / "demo").mkdir()  # a typo inside a local folder is not a model ID
    assert main(["info", "demo/finetuned_0-5"]) == 1
    line = one_error_line(capsys)
    assert "check the path" in line and "download" not in line
