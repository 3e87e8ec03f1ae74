"""Outputs are atomic and inputs are never destroyed (issue 8.2).

Checks: an output naming an input (directly, by another spelling, by a symlink or a hard
link, or as a folder around it) is refused even with overwrite; a failed merge leaves no
file and keeps a previous output; a full disk leaves nothing; cancelling at random
moments leaves nothing or a complete, correct file; the recipe stored in a result
reproduces it bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from core.checkpoints import open_checkpoint, save_state_dict
from core.errors import Cancelled, MergerError, OutputError
from core.jobs import Progress
from core.merge import run_merge
from core.recipe import ModelEntry, Recipe

REPO = Path(__file__).resolve().parents[2]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ckpt:
        return ckpt.state_dict()


def everything(folder: Path) -> list[str]:
    """Every entry under folder, hidden temporaries included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A base and two fine-tunes, 24 tensors of 256x256, so a merge takes a moment."""
    d = tmp_path_factory.mktemp("models")
    gen = torch.Generator().manual_seed(0)
    base = {f"layers.{i}.weight": torch.randn(256, 256, generator=gen) for i in range(24)}
    base["steps"] = torch.tensor(5)
    paths = {"base": d / "base.safetensors"}
    save_state_dict(base, paths["base"])
    for k in ("ft1", "ft2"):
        state = {
            n: t + 0.01 * torch.randn(t.shape, generator=gen) if t.is_floating_point() else t
            for n, t in base.items()
        }
        paths[k] = d / f"{k}.safetensors"
        save_state_dict(state, paths[k])
    return paths


def ta(models, **params) -> Recipe:
    return Recipe(
        "task_arithmetic",
        (ModelEntry(str(models["ft1"])), ModelEntry(str(models["ft2"]))),
        base_model=str(models["base"]),
        parameters=params,
    )


# -- inputs are never overwritten ----------------------------------------------------
@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "relative"])
def test_output_naming_an_input_is_refused_even_with_overwrite(
    models, tmp_path, spelling, monkeypatch
):
    target = models["ft2"]
    before = sha(target)
    if spelling == "same":
        out = target
    elif spelling == "dotdot":
        out = target.parent / "sub" / ".." / target.name
    elif spelling == "symlink":
        out = tmp_path / "link.safetensors"
        out.symlink_to(target)
    else:
        monkeypatch.chdir(target.parent)
        out = Path(target.name)
    with pytest.raises(OutputError, match="input"):
        run_merge(ta(models), out, overwrite=True)
    assert sha(target) == before
    assert not [p for p in everything(target.parent) if p.startswith(".")]


def test_output_folder_holding_an_input_is_refused(models):
    before = {k: sha(p) for k, p in models.items()}
    with pytest.raises(OutputError, match="input"):
        run_merge(ta(models), models["base"].parent, overwrite=True)
    assert {k: sha(p) for k, p in models.items()} == before


def test_output_inside_an_input_folder_is_refused(models, tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    shutil.copy(models["ft1"], hf / "model.safetensors")
    recipe = Recipe("task_arithmetic", (ModelEntry(str(hf)),), base_model=str(models["base"]))
    with pytest.raises(OutputError, match="inside the input"):
        run_merge(recipe, hf / "merged.safetensors")
    assert everything(hf) == ["model.safetensors"]


def test_a_hard_link_to_an_input_never_changes_the_input(models, tmp_path):
    """realpath cannot see hard links; publishing must still not write into the inode."""
    link = tmp_path / "hard.safetensors"
    os.link(models["ft1"], link)
    before = sha(models["ft1"])
    with contextlib.suppress(OutputError):
        run_merge(ta(models), link, overwrite=True)
    assert sha(models["ft1"]) == before


# -- failures leave nothing, and keep what was there -------------------------------------
def test_a_failed_merge_keeps_the_previous_output(models, tmp_path):
    out = tmp_path / "merged.safetensors"
    run_merge(ta(models), out)
    before = sha(out)
    broken = tmp_path / "nan.safetensors"
    state = tensors(models["ft2"])
    state["layers.20.weight"][3, 3] = float("nan")
    save_state_dict(state, broken)
    recipe = ta(models).with_(models=(ModelEntry(str(models["ft1"])), ModelEntry(str(broken))))
    with pytest.raises(MergerError, match="layers.20.weight"):
        run_merge(recipe, out, overwrite=True)
    assert sha(out) == before
    assert everything(tmp_path) == ["merged.safetensors", "nan.safetensors"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (needs root and mount rights; skipped where not permitted)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)


@pytest.mark.parametrize("name", ["merged.safetensors", "merged_folder"])
def test_a_full_disk_leaves_nothing(models, tiny_disk, name):
    with pytest.raises(OutputError, match="disk is full"):
        run_merge(ta(models), tiny_disk / name)  # ~6 MB into 2 MB
    assert everything(tiny_disk) == []


@pytest.mark.slow
def test_a_file_size_limit_in_the_cli_leaves_nothing(models, tmp_path):
    """RLIMIT_FSIZE makes writes fail with EFBIG, like a quota: one line, exit 1, no file."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "merge",
            "--method",
            "linear",
            str(models["ft1"]),
            str(models["ft2"]),
            "-o",
            str(out / "m.safetensors"),
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("merger: error:"), proc.stderr
    assert everything(out) == []


def test_an_unwritable_place_is_a_clean_error(models):
    with pytest.raises(OutputError):
        run_merge(ta(models), Path("/proc/merger-test.safetensors"))


def test_overwrite_does_not_delete_an_unrelated_folder(models, tmp_path):
    docs = tmp_path / "documents"
    docs.mkdir()
    (docs / "thesis.txt").write_text("years of work")
    with contextlib.suppress(OutputError):
        run_merge(ta(models), docs, overwrite=True)
    assert (docs / "thesis.txt").exists()


# -- cancel at random moments ---------------------------------------------------------
def _merge_with_cancel(recipe: Recipe, out: Path, delay: float) -> str:
    progress = Progress()
    timer = threading.Timer(delay, progress.cancel)
    timer.start()
    try:
        run_merge(recipe, out, progress=progress)
        return "done"
    except Cancelled:
        return "cancelled"
    finally:
        timer.cancel()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_cancel_at_random_moments_leaves_nothing_or_a_whole_file(models, tmp_path, method):
    recipe = ta(models).with_(merge_method=method)
    reference = tmp_path / "reference.safetensors"
    start = time.monotonic()
    run_merge(recipe, reference)
    duration = time.monotonic() - start
    want = tensors(reference)
    rng = random.Random(8)
    outcomes = []
    for seed in range(8):
        out_dir = tmp_path / f"run{seed}"
        out_dir.mkdir()
        out = out_dir / ("merged.safetensors" if seed % 2 else "merged")
        outcome = _merge_with_cancel(recipe, out, rng.uniform(0, duration))
        outcomes.append(outcome)
        if outcome == "cancelled":
            assert everything(out_dir) == [], f"seed {seed} left {everything(out_dir)}"
        else:
            got = tensors(out)
            assert all(torch.equal(got[k], want[k]) for k in want)
    assert "cancelled" in outcomes, f"no run was cancelled ({outcomes}); the test proved nothing"


# -- results reload exactly; their recipe reproduces them ---------------------------------
@pytest.mark.parametrize(
    "method,params,per_model",
    [
        ("linear", {}, {"weight": 0.3}),
        ("task_arithmetic", {"lambda": 0.7}, {"weight": 0.5}),
        ("ties", {"lambda": [0.5, 1.0]}, {"density": 0.4}),
        ("dare_ties", {}, {"density": 0.5}),
        ("slerp", {"t": 0.3}, None),
    ],
)
def test_the_stored_recipe_reproduces_the_result(models, tmp_path, method, params, per_model):
    inputs = [models["ft1"]] if method == "slerp" else [models["ft1"], models["ft2"]]
    entries = tuple(ModelEntry(str(p), per_model or {}) for p in inputs)
    recipe = Recipe(method, entries, base_model=str(models["base"]), parameters=params, seed=7)
    first = tmp_path / "first"
    run_merge(recipe, first)
    with open_checkpoint(first) as ckpt:
        stored = Recipe.from_yaml(ckpt.metadata["merger_recipe"])
    from_file = Recipe.load(first / "merger_recipe.yaml")
    assert stored == from_file
    second = tmp_path / "second.safetensors"
    run_merge(stored, second)
    a, b = tensors(first), tensors(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
