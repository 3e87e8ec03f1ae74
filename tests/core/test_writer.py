"""The writer's promises: atomic publish, no leftovers on failure, inputs never touched."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from checkpoint_fixtures import files_under

from core.checkpoints import CheckpointWriter, TensorInfo, open_checkpoint, save_state_dict
from core.errors import OutputError

STATE = {"a": torch.arange(4.0), "b": torch.ones(2, 3), "c": torch.tensor([1, 2, 3])}
PLAN = [TensorInfo.of_tensor(k, v) for k, v in STATE.items()]


def write_all(writer, upto=None):
    for k, v in list(STATE.items())[:upto]:
        writer.write(k, v)


def test_nothing_is_visible_before_commit(tmp_path):
    out = tmp_path / "m.safetensors"
    with CheckpointWriter(out, PLAN) as w:
        write_all(w)
        assert not out.exists()
        assert len(files_under(tmp_path)) == 1  # one hidden temporary file
        assert w.commit() == [out]
    assert files_under(tmp_path) == ["m.safetensors"]


@pytest.mark.parametrize("out_name", ["m.safetensors", "folder"])
def test_exception_inside_the_block_leaves_nothing(tmp_path, out_name):
    shard_size = None if out_name.endswith(".safetensors") else 20
    with (
        pytest.raises(KeyError),
        CheckpointWriter(tmp_path / out_name, PLAN, shard_size=shard_size) as w,
    ):
        write_all(w, 2)
        raise KeyError("boom")
    assert files_under(tmp_path) == []


def test_leaving_the_block_without_commit_leaves_nothing(tmp_path):
    with CheckpointWriter(tmp_path / "o", PLAN) as w:
        write_all(w)
    assert files_under(tmp_path) == []


def test_abort_is_idempotent_and_ends_the_writer(tmp_path):
    w = CheckpointWriter(tmp_path / "o", PLAN)
    w.write("a", STATE["a"])
    w.abort()
    w.abort()
    assert files_under(tmp_path) == []
    with pytest.raises(RuntimeError):
        w.write("b", STATE["b"])


def test_missing_parent_folders_are_created_and_removed_on_abort(tmp_path):
    out = tmp_path / "x" / "y" / "m.safetensors"
    with CheckpointWriter(out, PLAN) as w:
        write_all(w, 1)
    assert files_under(tmp_path) == []
    save_state_dict(STATE, out)
    assert out.is_file()


@pytest.fixture(params=["direct", "buffered"])
def io_mode(request, monkeypatch):
    """Run a test with direct I/O allowed (used where the filesystem supports it) and off."""
    if request.param == "buffered":
        monkeypatch.setenv("MERGER_NO_DIRECT_IO", "1")
    return request.param


@pytest.mark.parametrize("out_name", ["m.safetensors", "folder"])
def test_disk_full_leaves_nothing_and_says_what_to_do(tmp_path, out_name, io_mode):
    w = CheckpointWriter(tmp_path / out_name, PLAN)

    def full_disk(path, offset):
        if offset > 100:
            raise OSError(errno.ENOSPC, "No space left on device")

    w.fault_hook = full_disk
    with pytest.raises(OutputError) as err:
        write_all(w)  # direct I/O stages small tensors: the failure may come at commit
        w.commit()
    assert "disk is full" in str(err.value) and "free some space" in str(err.value)
    assert out_name in str(err.value)
    assert files_under(tmp_path) == []


def test_permission_error_becomes_an_output_error(tmp_path, io_mode):
    w = CheckpointWriter(tmp_path / "m.safetensors", PLAN)

    def denied(path, offset):
        raise OSError(errno.EROFS, "Read-only file system")

    w.fault_hook = denied
    with pytest.raises(OutputError, match="permission denied"):
        write_all(w)
        w.commit()
    assert files_under(tmp_path) == []


@pytest.mark.skipif(
    not Path("/proc/self").is_dir() or not os.access("/proc", os.W_OK),
    reason="needs Linux's /proc, which only root may try to write into",
)
def test_a_folder_that_takes_no_files_gets_a_hint_not_just_the_system_error(tmp_path):
    with pytest.raises(OutputError) as err:
        save_state_dict(STATE, Path("/proc/merged.safetensors"))
    assert "writing the output failed" in err.value.message
    assert "folder you can write to" in err.value.hint


def test_parent_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        save_state_dict(STATE, tmp_path / "afile" / "out" / "m.safetensors")
    assert files_under(tmp_path) == ["afile"]


def test_existing_output_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        save_state_dict(STATE, out)
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("out_name", ["m.safetensors", "folder"])
def test_overwrite_replaces_file_or_folder(tmp_path, out_name):
    out = tmp_path / out_name
    save_state_dict({"old": torch.zeros(1)}, out, extra_files=None)
    save_state_dict(STATE, out, overwrite=True)
    with open_checkpoint(out) as ck:
        assert ck.keys() == list(STATE)
    assert all(not n.startswith(".") for n in files_under(tmp_path))


def test_overwrite_replaces_a_sharded_folder_with_a_single_one(tmp_path):
    out = tmp_path / "o"
    save_state_dict(STATE, out, shard_size=10)
    save_state_dict(STATE, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]


def test_overwrite_keeps_a_model_folders_tokenizer_and_readme(tmp_path):
    """Replacing a merge must not delete the files that came with the model; the old
    weights, their index and config are the new output's to say, not carried over."""
    out = tmp_path / "o"
    save_state_dict({"old": torch.zeros(1)}, out, shard_size=1)
    (out / "tokenizer.json").write_text('{"kept": true}')
    (out / "README.md").write_text("model card")
    (out / "config.json").write_text('{"old": true}')
    (out / "adapter_config.json").write_text("{}")  # describes the old weights
    written = save_state_dict(STATE, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert (out / "tokenizer.json").read_text() == '{"kept": true}'
    assert {p.name for p in written} >= {"README.md", "tokenizer.json"}
    assert all(not n.startswith(".") for n in files_under(tmp_path))


def test_inputs_are_never_overwritten(tmp_path):
    model = tmp_path / "in" / "model.safetensors"
    save_state_dict(STATE, model)
    before = model.read_bytes()
    for out in (model, tmp_path / "in", tmp_path, tmp_path / "in" / "merged"):
        with pytest.raises(OutputError, match="input"):
            save_state_dict(STATE, out, protect=[model.parent], overwrite=True)
    with pytest.raises(OutputError, match="input"):
        save_state_dict(STATE, model, protect=[model], overwrite=True)
    assert model.read_bytes() == before


def test_a_symlink_to_an_input_is_recognised(tmp_path):
    model = tmp_path / "model.safetensors"
    save_state_dict(STATE, model)
    (tmp_path / "alias.safetensors").symlink_to(model)
    with pytest.raises(OutputError, match="one of the input"):
        save_state_dict(STATE, tmp_path / "alias.safetensors", protect=[model], overwrite=True)


def test_sharding_a_single_file_output_is_refused_with_advice(tmp_path):
    with pytest.raises(OutputError, match="give a folder"):
        CheckpointWriter(tmp_path / "m.safetensors", PLAN, shard_size=20)
    assert files_under(tmp_path) == []


def test_write_checks_order_shape_and_dtype(tmp_path):
    with CheckpointWriter(tmp_path / "o", PLAN) as w:
        with pytest.raises(ValueError, match="expected tensor 'a'"):
            w.write("b", STATE["b"])
        with pytest.raises(ValueError, match="plan says"):
            w.write("a", STATE["a"].double())
    with CheckpointWriter(tmp_path / "o", PLAN) as w:
        w.write("a", STATE["a"])
        with pytest.raises(ValueError, match="before all tensors"):
            w.commit()
    assert files_under(tmp_path) == []


def test_non_contiguous_tensors_are_written_in_logical_order(tmp_path):
    t = torch.arange(6.0).reshape(2, 3).t()
    save_state_dict({"t": t}, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "m.safetensors") as ck:
        assert torch.equal(ck.get("t"), t)


def test_extra_files_land_in_the_folder(tmp_path):
    files = save_state_dict(
        STATE, tmp_path / "o", extra_files={"config.json": b"{}", "README.md": b"# hi"}
    )
    assert [f.name for f in files] == ["model.safetensors", "config.json", "README.md"]
    assert (tmp_path / "o" / "README.md").read_bytes() == b"# hi"
    with pytest.raises(ValueError):
        save_state_dict(STATE, tmp_path / "p", extra_files={"../escape": b""})


def test_metadata_must_be_strings(tmp_path):
    with pytest.raises(TypeError):
        CheckpointWriter(tmp_path / "o", PLAN, metadata={"n": 3})


@pytest.mark.parametrize("sizes", [[1024, 3], [5000, 1, 4096 * 3, 7], [2**20 + 1, 2**20]])
def test_byte_exact_output_for_aligned_and_unaligned_sizes(tmp_path, io_mode, sizes):
    # exercises direct I/O's zero-copy blocks, staged tails, padding and final truncation
    import core.checkpoints.file_sink as sink

    state = {f"t{i}": torch.randint(0, 255, (n,), dtype=torch.uint8) for i, n in enumerate(sizes)}
    out = tmp_path / "m.safetensors"
    save_state_dict(state, out)
    with open_checkpoint(out) as ck:
        assert all(torch.equal(ck.get(k), v) for k, v in state.items())
        header_end = min(ck._entries[k].start for k in state)
    assert out.stat().st_size == header_end + sum(sizes)
    assert header_end % sink.ALIGN == 0


@pytest.mark.parametrize("sizes", [[2**20, 5], [10, 2**20 + 3]])
def test_direct_io_refused_midway_falls_back_to_buffered(tmp_path, sizes):
    import core.checkpoints.file_sink as sink

    state = {f"t{i}": torch.randint(0, 255, (n,), dtype=torch.uint8) for i, n in enumerate(sizes)}
    plan = [TensorInfo.of_tensor(k, v) for k, v in state.items()]
    out = tmp_path / "m.safetensors"
    refused = []
    with CheckpointWriter(out, plan) as w:
        if not w._sink.direct:
            pytest.skip("this filesystem has no direct I/O")

        def refuse_once(path, offset):  # like a filesystem that rejects O_DIRECT writes
            if offset >= sink.ALIGN and not refused:
                refused.append(offset)
                raise OSError(errno.EINVAL, "Invalid argument")

        w.fault_hook = refuse_once
        for k, v in state.items():
            w.write(k, v)
        w.commit()
    assert refused
    with open_checkpoint(out) as ck:
        assert all(torch.equal(ck.get(k), v) for k, v in state.items())


def test_overwrite_refuses_a_folder_that_is_not_a_model(tmp_path):
    docs = tmp_path / "documents"
    docs.mkdir()
    (docs / "thesis.txt").write_text("years of work")
    with pytest.raises(OutputError, match="does not look like a model"):
        save_state_dict(STATE, docs, overwrite=True)
    (docs / "thesis.txt").unlink()
    (docs / "notes.json").write_text("{}")  # no weights at all: not a model either
    with pytest.raises(OutputError, match="does not look like a model"):
        save_state_dict(STATE, docs, overwrite=True)
    assert (docs / "notes.json").exists()


def test_overwrite_refuses_a_file_that_is_not_a_model(tmp_path):
    (tmp_path / "notes").write_text("x")
    with pytest.raises(OutputError, match="not a model file"):
        save_state_dict(STATE, tmp_path / "notes", overwrite=True)


def test_overwrite_accepts_an_empty_folder_and_a_model_folder_with_companions(tmp_path):
    (tmp_path / "empty").mkdir()
    save_state_dict(STATE, tmp_path / "empty", overwrite=True)
    extra = {"config.json": b"{}", "README.md": b"# m", "merger_recipe.yaml": b"x: 1"}
    save_state_dict(STATE, tmp_path / "model", extra_files=extra)
    save_state_dict(STATE, tmp_path / "model", overwrite=True)
    # the model card stays; the old config and recipe were the old merge's
    names = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert names == ["README.md", "model.safetensors"]


def test_a_killed_runs_temporaries_are_removed_by_the_next_write(tmp_path):
    """SIGKILL gives no chance to clean up: the next write to the same output removes the
    half-written files of processes that no longer exist, and nothing else."""
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    out = tmp_path / "m.safetensors"
    stale_file = tmp_path / f".m.safetensors.tmp-{dead_pid}-0123abcd"
    stale_file.write_bytes(b"half")
    stale_folder = tmp_path / f".m.safetensors.tmp-{dead_pid}-4567cdef"
    stale_folder.mkdir()
    (stale_folder / "model-00001-of-00002.safetensors").write_bytes(b"half")
    live = tmp_path / f".m.safetensors.tmp-{os.getppid()}-89abcdef"  # a running process's
    live.write_bytes(b"in progress")
    renamed_away = tmp_path / f".m.safetensors.old-{dead_pid}-0123abcd"  # maybe the only copy
    renamed_away.write_bytes(b"previous output")
    other = tmp_path / f".other.safetensors.tmp-{dead_pid}-0123abcd"
    other.write_bytes(b"another output's")
    save_state_dict(STATE, out)
    assert not stale_file.exists() and not stale_folder.exists()
    assert live.exists() and renamed_away.exists() and other.exists() and out.exists()


def test_long_output_names_write_and_too_long_ones_are_refused_clearly(tmp_path):
    """A name near the 255-byte limit still gets temporaries that fit; a longer one is
    refused as too long, not with an OS error from deep inside."""
    long = tmp_path / ("y" * 238 + ".safetensors")  # 250 bytes
    save_state_dict(STATE, long)
    assert long.exists() and files_under(tmp_path) == [long.name]
    save_state_dict(STATE, long, overwrite=True)  # the renamed-away old one fits too
    with pytest.raises(OutputError, match="300 bytes long; file systems allow 255"):
        save_state_dict(STATE, tmp_path / ("z" * 288 + ".safetensors"))
