"""Torch pickles: wrappers, prefixes, nesting, sharding, and code that must never run."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from core.checkpoints import open_checkpoint
from core.errors import CheckpointError


def weights():
    return {"layer.weight": torch.randn(3, 2), "layer.bias": torch.randn(3), "n": torch.tensor(7)}


def assert_holds(path, expected, fmt="pytorch"):
    with open_checkpoint(path) as ck:
        assert ck.format == fmt
        assert ck.keys() == list(expected)
        for name, t in expected.items():
            got = ck.get(name)
            assert got.dtype == t.dtype and torch.equal(got, t)


def test_plain_state_dict(tmp_path):
    sd = weights()
    torch.save(sd, tmp_path / "m.pt")
    assert_holds(tmp_path / "m.pt", sd)


def test_legacy_non_zip_format_is_read(tmp_path):
    sd = weights()
    torch.save(sd, tmp_path / "m.pth", _use_new_zipfile_serialization=False)
    assert_holds(tmp_path / "m.pth", sd)


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict", "module"])
def test_wrappers_are_unwrapped_and_other_entries_ignored(tmp_path, key):
    sd = weights()
    obj = {key: sd, "epoch": 12, "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}}}
    torch.save(obj, tmp_path / "m.ckpt")
    assert_holds(tmp_path / "m.ckpt", sd)


def test_the_weight_set_read_is_named_when_the_file_holds_others(tmp_path, capsys):
    """A training checkpoint with an EMA copy and optimizer state: the `model` weights are
    read, and the file's other tensor-holding entries are named, not silently dropped
    (scalars such as the epoch are not weights and go unmentioned)."""
    from core.cli import main

    sd = weights()
    obj = {
        "model": sd,
        "ema": {k: v * 2 for k, v in sd.items()},
        "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}},
        "epoch": 12,
    }
    torch.save(obj, tmp_path / "train.pt")
    assert_holds(tmp_path / "train.pt", sd)
    with open_checkpoint(tmp_path / "train.pt") as ck:
        assert ck.notes == [
            "weights read from 'model'; also in the file, not read: 'ema', 'optimizer'"
        ]
    assert main(["info", str(tmp_path / "train.pt")]) == 0
    assert "note        weights read from 'model'" in capsys.readouterr().out
    merged = tmp_path / "avg.safetensors"
    args = ["merge", "--method", "linear", str(tmp_path / "train.pt"), str(tmp_path / "train.pt")]
    assert main([*args, "-o", str(merged), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert f"note: {tmp_path / 'train.pt'}: weights read from 'model'; also in" in said
    torch.save(sd, tmp_path / "plain.pt")
    with open_checkpoint(tmp_path / "plain.pt") as ck:
        assert ck.notes == []


def test_dataparallel_prefix_is_stripped(tmp_path):
    sd = weights()
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "m.bin")
    assert_holds(tmp_path / "m.bin", sd)


@pytest.mark.parametrize("prefix", ["module._orig_mod.", "_orig_mod.module.", "module.module."])
def test_nested_wrapper_prefixes_are_stripped_in_any_order(tmp_path, prefix):
    """torch.compile inside DataParallel or the other way round; a `module.` twice is a
    wrapper of a wrapper (each known prefix is dropped at most once, in any order)."""
    sd = weights()
    torch.save({f"{prefix}{k}": v for k, v in sd.items()}, tmp_path / "m.pt")
    once = prefix if prefix == "module.module." else ""
    expected = {f"{once.removeprefix('module.')}{k}": v for k, v in sd.items()}
    assert_holds(tmp_path / "m.pt", expected)


def test_prefix_on_only_some_keys_is_kept(tmp_path):
    sd = {"module.a": torch.ones(1), "b": torch.zeros(1)}
    torch.save(sd, tmp_path / "m.pt")
    assert_holds(tmp_path / "m.pt", sd)


def test_lightning_checkpoint_strips_the_model_prefix(tmp_path):
    sd = weights()
    obj = {
        "state_dict": {f"model.{k}": v for k, v in sd.items()},
        "pytorch-lightning_version": "2.4.0",
        "global_step": 100,
        "hyper_parameters": {"lr": 0.1},
    }
    torch.save(obj, tmp_path / "last.ckpt")
    assert_holds(tmp_path / "last.ckpt", sd)
    with open_checkpoint(tmp_path / "last.ckpt") as ck:  # the outputs' names differ: say so
        assert any("without the prefix 'model.'" in n for n in ck.notes), ck.notes


def test_a_stripped_dataparallel_prefix_is_noted(tmp_path):
    torch.save({f"module.{k}": v for k, v in weights().items()}, tmp_path / "m.bin")
    with open_checkpoint(tmp_path / "m.bin") as ck:
        assert any("without the prefix 'module.'" in n for n in ck.notes), ck.notes
    torch.save(weights(), tmp_path / "plain.pt")
    with open_checkpoint(tmp_path / "plain.pt") as ck:
        assert ck.notes == []


@pytest.mark.parametrize("obj", [torch.randn(3), [torch.randn(2), torch.randn(2)]])
def test_unnamed_tensors_are_not_called_no_tensors(tmp_path, obj):
    torch.save(obj, tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="unnamed tensors, not a state dict"):
        open_checkpoint(tmp_path / "t.pt")


def test_model_prefix_is_kept_outside_lightning(tmp_path):
    sd = {"model.a": torch.ones(1), "model.b": torch.zeros(1)}
    torch.save(sd, tmp_path / "m.pt")
    assert_holds(tmp_path / "m.pt", sd)


def test_nested_dicts_are_flattened_with_dots(tmp_path):
    obj = {"encoder": {"w": torch.ones(2), "inner": {"b": torch.zeros(1)}}, "head": torch.eye(2)}
    obj["encoder"]["note"] = "not a tensor"
    torch.save(obj, tmp_path / "m.pt")
    expected = {"encoder.w": torch.ones(2), "encoder.inner.b": torch.zeros(1), "head": torch.eye(2)}
    assert_holds(tmp_path / "m.pt", expected)


def test_get_casts_and_copies_pickled_tensors(tmp_path):
    sd = {"w": torch.randn(4).half()}
    torch.save(sd, tmp_path / "m.pt")
    with open_checkpoint(tmp_path / "m.pt") as ck:
        got = ck.get("w", dtype=torch.float32)
        assert got.dtype == torch.float32 and torch.equal(got, sd["w"].float())
        ck.get("w").zero_()
        assert torch.equal(ck.get("w"), sd["w"])


def test_pickle_without_tensors_is_a_clear_error(tmp_path):
    torch.save({"epoch": 3, "name": "x"}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="no tensors") as err:
        open_checkpoint(tmp_path / "m.pt")
    assert "m.pt" in str(err.value)


class Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_code_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned.txt"
    torch.save({"w": torch.ones(2), "evil": Payload(str(marker))}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    message = str(err.value)
    assert "evil.pt" in message and "never runs code" in message
    assert "Traceback" not in message


def test_plain_pickle_of_a_payload_is_refused_too(tmp_path):
    marker = tmp_path / "pwned.txt"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(CheckpointError):
        open_checkpoint(tmp_path / "evil.bin")
    assert not marker.exists()


def test_sharded_pickles_through_their_index(tmp_path):
    a, b = {"a": torch.ones(2)}, {"b": torch.zeros(3), "c": torch.tensor([1, 2])}
    torch.save(a, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save(b, tmp_path / "pytorch_model-00002-of-00002.bin")
    weight_map = {"a": "pytorch_model-00001-of-00002.bin"}
    weight_map |= {k: "pytorch_model-00002-of-00002.bin" for k in b}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text('{"model_type": "toy"}')
    with open_checkpoint(tmp_path) as ck:
        assert ck.format == "pytorch (sharded)" and ck.config == {"model_type": "toy"}
        assert ck.keys() == ["a", "b", "c"] and torch.equal(ck.get("c"), b["c"])


@pytest.mark.parametrize("content", [b"", b"garbage that is not a pickle", b"PK\x03\x04broken"])
def test_empty_or_garbage_pickle_is_a_clear_error(tmp_path, content):
    (tmp_path / "m.pt").write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path / "m.pt")
    assert "m.pt" in str(err.value)


def test_truncated_zip_pickle_is_a_clear_error(tmp_path):
    torch.save(weights(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        open_checkpoint(tmp_path / "cut.pt")


@pytest.mark.parametrize(
    ("tensor", "text"),
    [
        (torch.ones(2, dtype=torch.complex64), "complex64"),
        (torch.ones(2, dtype=torch.uint32), "uint32"),
        (torch.ones(2, device="meta"), "no data"),
    ],
    ids=["complex", "uint32", "meta"],
)
def test_tensors_a_merge_cannot_handle_are_refused_at_open(tmp_path, tensor, text):
    torch.save({"ok": torch.ones(1), "bad": tensor}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=text) as err:
        open_checkpoint(tmp_path / "m.pt")
    assert "tensor 'bad'" in str(err.value)


def test_a_tensor_named_like_safetensors_metadata_is_refused(tmp_path):
    torch.save({"__metadata__": torch.ones(1)}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="reserved"):
        open_checkpoint(tmp_path / "m.pt")


@pytest.mark.parametrize(
    "content", [b"just some notes\nnot a model\n", b"no model", b"\x80\x02garbage"]
)
def test_text_or_junk_with_a_pickle_extension_is_not_called_code(tmp_path, content):
    """Bytes that are no pickle at all are a broken or foreign file, not a refused object."""
    (tmp_path / "notes.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="notes.pt") as err:
        open_checkpoint(tmp_path / "notes.pt")
    assert "not a readable torch checkpoint" in str(err.value)
    assert "code" not in str(err.value)


def test_a_text_file_named_pt_is_called_text(tmp_path):
    (tmp_path / "readme.pt").write_text("hello, this is not a model\n")
    with pytest.raises(CheckpointError, match="the file holds text"):
        open_checkpoint(tmp_path / "readme.pt")
