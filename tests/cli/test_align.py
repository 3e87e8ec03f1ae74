"""Permutation alignment end to end: `merger align`, and the Re-Basin merge methods."""

from __future__ import annotations

import json

import torch

from core.alignment.align import interpolate
from core.architectures import resolve_architecture
from core.checkpoints import open_checkpoint
from core.cli import main
from core.data import load_npz
from core.evaluate import evaluate


def state(path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ckpt:
        return ckpt.state_dict()


def barrier(a, b, data, arch, steps=11) -> float:
    """max_λ L(λ) − ½(L(0) + L(1)) along the straight line (Git Re-Basin's definition)."""
    losses = [
        evaluate(arch.build(interpolate(a, b, i / (steps - 1))), data)["loss"] for i in range(steps)
    ]
    return max(losses) - 0.5 * (losses[0] + losses[-1])


def test_align_keeps_b_function_and_lowers_the_barrier(demo, tmp_path, capsys):
    out = tmp_path / "b_aligned.safetensors"
    a_path, b_path = demo.seeds
    assert main(["align", str(a_path), str(b_path), "-o", str(out), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["objective_after"] > report["objective_before"]
    a, b, b_al = state(a_path), state(b_path), state(out)
    arch = resolve_architecture(None, a)
    data = load_npz(demo.data)
    # same function as B, to float tolerance
    with torch.no_grad():
        y_b, y_al = arch.build(b)(data.x), arch.build(b_al)(data.x)
    assert torch.allclose(y_b, y_al, atol=1e-4)
    assert not all(torch.equal(b[k], b_al[k]) for k in b)  # really permuted
    # two independently trained MLPs: the barrier shrinks a lot after alignment
    naive, aligned = barrier(a, b, data, arch), barrier(a, b_al, data, arch)
    assert naive > 0.2
    assert aligned < naive / 3


def test_weight_matching_method_is_interpolation_of_a_and_aligned_b(demo, tmp_path):
    a_path, b_path = demo.seeds
    aligned = tmp_path / "b_al.safetensors"
    merged = tmp_path / "wm.safetensors"
    assert main(["align", str(a_path), str(b_path), "-o", str(aligned), "--quiet"]) == 0
    assert (
        main(
            [
                "merge",
                "--method",
                "weight_matching",
                str(a_path),
                str(b_path),
                "--set",
                "lambda=0.3",
                "-o",
                str(merged),
                "--quiet",
            ]
        )
        == 0
    )
    a, b_al, got = state(a_path), state(aligned), state(merged)
    for k in a:
        assert torch.allclose(got[k], 0.7 * a[k] + 0.3 * b_al[k], atol=1e-6), k


def test_activation_matching_needs_data(demo, tmp_path, capsys):
    a_path, b_path = demo.seeds
    code = main(
        [
            "merge",
            "--method",
            "activation_matching",
            str(a_path),
            str(b_path),
            "-o",
            str(tmp_path / "am.safetensors"),
        ]
    )
    assert code == 1
    assert "needs data" in capsys.readouterr().err


def test_activation_matching_merge_beats_naive_average(demo, tmp_path):
    a_path, b_path = demo.seeds
    out = tmp_path / "am.safetensors"
    assert (
        main(
            [
                "merge",
                "--method",
                "activation_matching",
                "--data",
                str(demo.data),
                str(a_path),
                str(b_path),
                "-o",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    a, b, merged = state(a_path), state(b_path), state(out)
    arch = resolve_architecture(None, a)
    data = load_npz(demo.data)
    naive = evaluate(arch.build(interpolate(a, b, 0.5)), data)
    aligned = evaluate(arch.build(merged), data)
    assert aligned["loss"] < naive["loss"]
    assert aligned["accuracy"] > naive["accuracy"]


MODEL_PY = """
import torch
from torch import nn

def factory():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 10))

open(__file__ + ".ran", "w").close()
"""


def test_recipe_naming_a_python_file_needs_allow_code(demo, tmp_path, capsys):
    from core.checkpoints import save_state_dict

    a_path, b_path = demo.seeds
    # the demo models under nn.Sequential's own names (0., 2., 4.)
    for src, name in ((a_path, "a"), (b_path, "b")):
        st = {k.removeprefix("layers."): v for k, v in state(src).items()}
        save_state_dict(st, tmp_path / f"{name}.safetensors")
    model_py = tmp_path / "model.py"
    model_py.write_text(MODEL_PY)
    recipe = tmp_path / "wm.yaml"
    recipe.write_text(
        "merge_method: weight_matching\nmodels: [a.safetensors, b.safetensors]\n"
        "arch: model.py:factory\n"
    )
    out = tmp_path / "out.safetensors"
    assert main(["run", str(recipe), "-o", str(out)]) == 1
    assert "allow" in capsys.readouterr().err.lower()
    assert not (tmp_path / "model.py.ran").exists() and not out.exists()
    assert main(["run", str(recipe), "-o", str(out), "--allow-code", "--quiet"]) == 0
    assert (tmp_path / "model.py.ran").exists() and out.exists()


def test_rebasin_output_keeps_the_inputs_dtype(demo, tmp_path):
    from core.checkpoints import save_state_dict

    a_path, b_path = demo.seeds
    halves = []
    for src, name in ((a_path, "a"), (b_path, "b")):
        st = {k: v.to(torch.bfloat16) for k, v in state(src).items()}
        halves.append(save_state_dict(st, tmp_path / f"{name}.safetensors")[0])
    out = tmp_path / "wm.safetensors"
    assert (
        main(["merge", "--method", "weight_matching", *map(str, halves), "-o", str(out), "--quiet"])
        == 0
    )
    with open_checkpoint(out) as ckpt:
        assert {i.dtype for i in ckpt.infos()} == {torch.bfloat16}


def test_saved_recipe_runs_from_another_folder(demo, tmp_path, monkeypatch):
    recipe = tmp_path / "r.yaml"
    monkeypatch.chdir(demo.folder)
    assert (
        main(
            [
                "merge",
                "--method",
                "linear",
                "seed_a.safetensors",
                "seed_b.safetensors",
                "-o",
                str(tmp_path / "x.safetensors"),
                "--save-recipe",
                str(recipe),
                "--quiet",
            ]
        )
        == 0
    )
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(recipe), "-o", str(tmp_path / "y.safetensors"), "--quiet"]) == 0


def test_a_wrong_architecture_names_the_checkpoint(demo, tmp_path, capsys):
    """`--arch vgg` on an MLP: align, the weight-matching merge and eval all say which file
    is not that architecture."""
    a_path, b_path = demo.seeds
    out = str(tmp_path / "x.safetensors")
    commands = [
        ["align", str(a_path), str(b_path), "--arch", "vgg", "-o", out],
        ["merge", "--method", "weight_matching", str(a_path), str(b_path), "--arch", "vgg",
         "-o", out],
        ["eval", str(a_path), "--arch", "vgg", "--data", "digits"],
    ]  # fmt: skip
    for args in commands:
        assert main(args) == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress line
        assert err.startswith(f"merger: error: {a_path}: the checkpoint is not a 'vgg' model"), err


def test_align_refuses_a_bad_output_before_aligning(
    demo, tmp_path, read_only_folder, capsys, monkeypatch
):
    """An existing output, a path under a file or a read-only folder is refused before
    the alignment runs (on a real network it takes seconds to minutes), naming the output."""
    import core.cli.cmd_align as cmd_align

    def no_work(*args, **kwargs):
        raise AssertionError("aligned before checking the output")

    monkeypatch.setattr(cmd_align, "align", no_work)
    taken = tmp_path / "taken.safetensors"
    taken.write_bytes(b"someone's file")
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [(taken, "already exists"), (afile / "b.safetensors", "is a file, not a folder")]
    if read_only_folder.denies:  # root writes anyway: the writer reports it later
        cases.append((read_only_folder.path / "sub" / "b.safetensors", "permission denied"))
    a_path, b_path = demo.seeds
    for out, words in cases:
        assert main(["align", str(a_path), str(b_path), "-o", str(out), "--quiet"]) == 1
        err = capsys.readouterr().err.strip()
        assert str(out) in err and words in err, err
    assert taken.read_bytes() == b"someone's file"


def test_lambda_one_is_b_aligned_with_its_own_batchnorm_statistics(tmp_path, capsys):
    """At λ = 1 the merge is B aligned to A, exactly what `merger align` writes: B's
    statistics (permuted) are right, so data does not re-estimate them; in between it does."""
    import numpy as np
    from safetensors.torch import save_file

    from core.architectures.factories import resnet20_state

    paths = []
    for seed in (0, 1):
        sd = resnet20_state(norm="batchnorm", blocks_per_stage=1, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        for k in sd:  # trained-looking statistics, not the init's 0 and 1
            if k.endswith("running_mean"):
                sd[k] = torch.randn(sd[k].shape, generator=gen)
            elif k.endswith("running_var"):
                sd[k] = torch.rand(sd[k].shape, generator=gen) + 0.5
        paths.append(tmp_path / f"m{seed}.safetensors")
        save_file(sd, paths[-1])
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.normal(size=(64, 3, 32, 32)).astype("float32"), y=rng.integers(0, 10, 64))
    aligned = tmp_path / "aligned.safetensors"
    a, b = (str(p) for p in paths)
    assert main(["align", a, b, "-o", str(aligned), "--quiet"]) == 0
    common = ["merge", "--method", "weight_matching", a, b, "--data", str(data), "--quiet"]
    capsys.readouterr()
    assert main([*common, "--set", "lambda=1", "-o", str(tmp_path / "one.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "kept BatchNorm statistics" in out and "is not used" not in out  # said once
    assert main([*common, "--set", "lambda=0.5", "-o", str(tmp_path / "half.safetensors")]) == 0
    assert "(64 examples: few, so the statistics are rough" in capsys.readouterr().out
    off = [
        "--set",
        "lambda=0.5",
        "--set",
        "reset_bn=false",
        "-o",
        str(tmp_path / "off.safetensors"),
    ]
    assert main([*common, *off]) == 0
    assert f"data {data.stem} is not used for the merge" in capsys.readouterr().out
    one_example = tmp_path / "one.npz"
    np.savez(one_example, x=rng.normal(size=(1, 3, 32, 32)).astype("float32"))
    single = [*common[:-3], "--data", str(one_example), "-o", str(tmp_path / "single.safetensors")]
    assert main(single) == 1
    assert "cannot be re-estimated from 1 example(s)" in capsys.readouterr().err
    assert not (tmp_path / "single.safetensors").exists()
    one, want = state(tmp_path / "one.safetensors"), state(aligned)
    assert one.keys() == want.keys()
    for k in want:
        assert torch.equal(one[k], want[k]), k
    half, a_state = state(tmp_path / "half.safetensors"), state(paths[0])
    stats = [k for k in half if k.endswith("running_var")]
    midpoint = {k: 0.5 * (a_state[k] + want[k]) for k in stats}
    assert all(not torch.allclose(half[k], midpoint[k]) for k in stats)  # measured anew
    no_data = ["merge", "--method", "weight_matching", a, b, "--quiet"]
    assert main([*no_data, "-o", str(tmp_path / "blind.safetensors")]) == 0
    assert "BatchNorm statistics are interpolated, not re-estimated: no data was given" in (
        capsys.readouterr().out
    )
    blind = state(tmp_path / "blind.safetensors")
    assert all(torch.allclose(blind[k], midpoint[k]) for k in stats)  # as the note says


def test_align_records_its_sources_and_keeps_config_only_in_folders(demo, tmp_path, capsys):
    """B given as a Hugging Face-style folder: a single-file output carries the alignment
    in its metadata (no config.json to put beside it); a folder output gets config.json."""
    import hashlib
    import shutil

    a_path, b_path = demo.seeds
    folder_b = tmp_path / "b_hf"
    folder_b.mkdir()
    shutil.copy(b_path, folder_b / "model.safetensors")
    (folder_b / "config.json").write_text('{"model_type": "mlp"}')
    as_file, as_folder = tmp_path / "b_al.safetensors", tmp_path / "b_al"
    assert main(["align", str(a_path), str(folder_b), "-o", str(as_file), "--quiet"]) == 0
    assert main(["align", str(a_path), str(folder_b), "-o", str(as_folder), "--quiet"]) == 0
    assert json.loads((as_folder / "config.json").read_text()) == {"model_type": "mlp"}
    assert not (tmp_path / "config.json").exists()
    with open_checkpoint(as_file) as ckpt:
        meta = ckpt.metadata
    sources = json.loads(meta["merger_sources"])
    assert [s["path"] for s in sources] == [str(a_path.resolve()), str(folder_b.resolve())]
    assert sources[0]["sha256"] == hashlib.sha256(a_path.read_bytes()).hexdigest()
    assert meta["merger_aligned_to"] == str(a_path.resolve()) and meta["merger_version"]
    capsys.readouterr()
    assert main(["info", str(as_file)]) == 0
    shown = capsys.readouterr().out
    assert f"aligned     {folder_b.resolve()}" in shown and "weight matching" in shown


def test_align_reports_a_broken_file_in_its_own_words(demo, tmp_path, capsys):
    """A truncated B gets the reader's message (file, tensor, re-export), not the advice
    about architectures that a mismatch gets."""
    a_path, b_path = demo.seeds
    data = b_path.read_bytes()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(data[: len(data) - 100])
    code = main(["align", str(a_path), str(broken), "-o", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    assert code == 1
    assert str(broken) in err and "tensor '" in err and "truncated" in err
    assert "same architecture" not in err
    assert not (tmp_path / "o.safetensors").exists()


def test_nan_anywhere_in_a_model_is_refused_by_name(demo, tmp_path, capsys):
    """Also outside the matching cost (the last layer's bias is in no permutation group):
    the merge would otherwise write NaN and exit 0."""
    from safetensors.torch import save_file

    a_path, b_path = demo.seeds
    b = state(b_path)
    last_bias = sorted(k for k in b if k.endswith("bias"))[-1]
    b[last_bias][0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(b, bad)
    out = tmp_path / "o.safetensors"
    for args in (
        ["align", str(a_path), str(bad), "-o", str(out)],
        ["merge", "--method", "weight_matching", str(a_path), str(bad), "-o", str(out)],
    ):
        assert main([*args, "--quiet"]) == 1
        err = capsys.readouterr().err
        assert f"{bad}: tensor '{last_bias}': holds NaN" in err, err
        assert not out.exists()


def test_activation_matching_takes_inputs_without_labels(demo, tmp_path, capsys):
    import numpy as np

    with np.load(demo.data) as archive:
        x = archive["x"]
    unlabelled = tmp_path / "x_only.npz"
    np.savez(unlabelled, x=x)
    a_path, b_path = demo.seeds
    out = tmp_path / "b_al.safetensors"
    args = ["align", str(a_path), str(b_path), "-o", str(out), "--by", "activations"]
    assert main([*args, "--data", str(unlabelled), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(unlabelled)]) == 1
    assert f"{unlabelled}: the data has no labels" in capsys.readouterr().err


def test_a_run_stopped_by_the_sweep_limit_does_not_claim_convergence(demo, tmp_path, capsys):
    a_path, b_path = map(str, demo.seeds)
    assert main(["align", a_path, b_path, "-o", str(tmp_path / "one.safetensors")]) == 0
    converged = capsys.readouterr().out
    assert "converged after" in converged and "sweep limit" not in converged
    args = ["align", a_path, b_path, "--max-iter", "1", "-o", str(tmp_path / "two.safetensors")]
    assert main(args) == 0
    stopped = capsys.readouterr().out
    assert "stopped at the sweep limit (1) before converging" in stopped
    assert "converged" not in stopped.replace("before converging", "")


def test_a_detected_architecture_is_named_as_an_assumption(demo, tmp_path, capsys):
    """Skip connections leave no trace in a state dict: an architecture detected from
    names and shapes is a guess, and the output says what was assumed."""
    a_path, b_path = map(str, demo.seeds)
    assert main(["align", a_path, b_path, "-o", str(tmp_path / "d.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "architecture mlp detected from the tensor names and shapes" in out
    assert "path/to/model.py:factory" in out
    assert "(same function as B if the model is the detected mlp)" in out
    named = ["align", a_path, b_path, "--arch", "mlp", "-o", str(tmp_path / "n.safetensors")]
    assert main(named) == 0
    out = capsys.readouterr().out
    assert "detected from" not in out and out.endswith("(same function as B)\n")


def test_options_the_matching_does_not_read_are_noted(demo, tmp_path, capsys):
    a_path, b_path = map(str, demo.seeds)
    args = ["align", a_path, b_path, "--data", "digits", "--metric", "euclidean"]
    assert main([*args, "-o", str(tmp_path / "w.safetensors"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "--data is not used by --by weights" in out
    assert "--metric applies to --by activations" in out
    plain = ["align", a_path, b_path, "-o", str(tmp_path / "p.safetensors"), "--quiet"]
    assert main(plain) == 0
    assert "not used" not in capsys.readouterr().out
    merge = ["merge", "--method", "weight_matching", a_path, b_path, "--data", "digits"]
    assert main([*merge, "-o", str(tmp_path / "m.safetensors"), "--quiet"]) == 0
    assert (
        "data digits is not used for the merge: weight matching needs none, and the "
        "models have no BatchNorm statistics"
    ) in capsys.readouterr().out
