"""Damaged and unexpected inputs: each gets a CheckpointError naming the file (and tensor)."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from checkpoint_fixtures import good_file, raw_safetensors, tensor_bytes

from core.checkpoints import open_checkpoint, save_state_dict
from core.errors import CheckpointError

A = torch.arange(6, dtype=torch.float32)
GOOD_ENTRY = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}


def open_fails(path, *match: str) -> str:
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(path)
    message = str(err.value)
    assert str(path) in message
    for m in match:
        assert m in message, message
    return message


def test_the_hand_made_good_file_opens(tmp_path):
    path, tensors = good_file(tmp_path / "g.safetensors")
    with open_checkpoint(path) as ck:
        assert ck.metadata == {"origin": "hand-made"}
        assert torch.equal(ck.get("b"), tensors["b"])


def test_empty_file(tmp_path):
    (tmp_path / "e.safetensors").write_bytes(b"")
    open_fails(tmp_path / "e.safetensors", "empty")


def test_file_shorter_than_the_length_prefix(tmp_path):
    (tmp_path / "s.safetensors").write_bytes(b"\x01\x02")
    open_fails(tmp_path / "s.safetensors", "too short")


def test_header_length_beyond_the_file(tmp_path):
    path = raw_safetensors(tmp_path / "t.safetensors", {"a": GOOD_ENTRY}, b"", length=10_000)
    open_fails(path, "header claims 10000 bytes", "re-download")


def test_absurd_header_length(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}")
    open_fails(tmp_path / "x.safetensors", "not a safetensors file")


def test_header_is_not_json(tmp_path):
    body = b"{not json"
    (tmp_path / "j.safetensors").write_bytes(struct.pack("<Q", len(body)) + body)
    open_fails(tmp_path / "j.safetensors", "not valid JSON")


def test_header_is_json_but_not_an_object(tmp_path):
    body = b"[1, 2]"
    (tmp_path / "j.safetensors").write_bytes(struct.pack("<Q", len(body)) + body)
    open_fails(tmp_path / "j.safetensors", "not a JSON object")


def test_unknown_dtype_names_the_tensor(tmp_path):
    entry = {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}
    path = raw_safetensors(tmp_path / "d.safetensors", {"w": entry}, bytes(16))
    open_fails(path, "tensor 'w'", "unknown dtype 'F128'")


@pytest.mark.parametrize(
    ("shape", "text"),
    [
        ([2, -3], "non-negative"),
        ([2, "3"], "non-negative"),
        ("23", "not a list"),
        ([1] * 65, "not a list"),
    ],
)
def test_bad_shapes(tmp_path, shape, text):
    entry = {"dtype": "F32", "shape": shape, "data_offsets": [0, 24]}
    path = raw_safetensors(tmp_path / "s.safetensors", {"w": entry}, tensor_bytes(A))
    open_fails(path, "tensor 'w'", text)


def test_absurd_shape_larger_than_the_file(tmp_path):
    entry = {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 24]}
    path = raw_safetensors(tmp_path / "s.safetensors", {"w": entry}, tensor_bytes(A))
    open_fails(path, "tensor 'w'", "more than the file's 24 bytes")


@pytest.mark.parametrize(
    ("offsets", "text"),
    [
        ([0, 20], "span 20 bytes"),
        ([4, 28], "end at 28"),
        ([8, 0], "negative or reversed"),
        ([0], "not a pair"),
        ("0-24", "not a pair"),
    ],
)
def test_bad_offsets(tmp_path, offsets, text):
    entry = {"dtype": "F32", "shape": [2, 3], "data_offsets": offsets}
    path = raw_safetensors(tmp_path / "o.safetensors", {"w": entry}, tensor_bytes(A))
    open_fails(path, "tensor 'w'", text)


def test_overlapping_tensors(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }
    path = raw_safetensors(tmp_path / "o.safetensors", header, tensor_bytes(A))
    open_fails(path, "tensor 'b'", "overlap", "'a'")


def test_truncated_data(tmp_path):
    path, _ = good_file(tmp_path / "g.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    open_fails(path, "tensor 'b'", "re-download")


def test_file_truncated_after_opening_fails_cleanly_on_read(tmp_path):
    path, _ = good_file(tmp_path / "g.safetensors")
    with open_checkpoint(path) as ck:
        os.truncate(path, os.path.getsize(path) - 8)
        with pytest.raises(CheckpointError, match="ended") as err:
            ck.get("b")
        assert "tensor 'b'" in str(err.value)


def test_metadata_must_be_an_object(tmp_path):
    path = raw_safetensors(
        tmp_path / "m.safetensors", {"__metadata__": [1], "a": GOOD_ENTRY}, tensor_bytes(A)
    )
    open_fails(path, "__metadata__")


def test_missing_path(tmp_path):
    open_fails(tmp_path / "nope.safetensors", "no such file")


def test_unknown_extension(tmp_path):
    (tmp_path / "w.onnx").write_bytes(b"x")
    open_fails(tmp_path / "w.onnx", "unknown file type")


def test_folder_without_weights_lists_what_it_found(tmp_path):
    (tmp_path / "README.md").write_text("hi")
    (tmp_path / "config.json").write_text("{}")
    open_fails(tmp_path, "no model weights", "README.md", "config.json")


def test_folder_with_several_weight_files_and_no_index(tmp_path):
    save_state_dict({"a": torch.ones(1)}, tmp_path / "one.safetensors")
    save_state_dict({"a": torch.ones(1)}, tmp_path / "two.safetensors")
    open_fails(tmp_path, "several weight files", "one.safetensors")


def test_directory_named_like_a_weights_file(tmp_path):
    (tmp_path / "m.safetensors").mkdir()
    open_fails(tmp_path / "m.safetensors", "no model weights")


def test_index_naming_a_missing_shard(tmp_path):
    save_state_dict({"a": torch.ones(1), "b": torch.ones(1)}, tmp_path / "m", shard_size=4)
    (tmp_path / "m" / "model-00002-of-00002.safetensors").unlink()
    open_fails(tmp_path / "m", "missing", "model-00002-of-00002.safetensors")


def test_index_that_disagrees_with_the_shards(tmp_path):
    save_state_dict({"a": torch.ones(1), "b": torch.ones(1)}, tmp_path / "m", shard_size=4)
    index = tmp_path / "m" / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    doc["weight_map"]["ghost"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(doc))
    open_fails(index, "tensor 'ghost'", "lacks it")


def test_index_that_is_not_json(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("{")
    open_fails(tmp_path / "model.safetensors.index.json", "not valid JSON")


def test_broken_config_json(tmp_path):
    save_state_dict({"a": torch.ones(1)}, tmp_path / "m" / "model.safetensors")
    (tmp_path / "m" / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="config.json"):
        open_checkpoint(tmp_path / "m")


def test_unreadable_file(tmp_path):
    path, _ = good_file(tmp_path / "g.safetensors")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: file permissions do not stop reading")
        open_fails(path, "permission denied")
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a": ' + b"9" * 5000 + b"}", b"\xff\xfe{}"],
    ids=["deep", "huge-int", "not-utf8"],
)
def test_hostile_json_headers(tmp_path, body):
    (tmp_path / "h.safetensors").write_bytes(struct.pack("<Q", len(body)) + body)
    open_fails(tmp_path / "h.safetensors", "not valid JSON")


@pytest.mark.parametrize("code", [["F32"], {"x": 1}, 5, None])
def test_dtype_that_is_not_a_string(tmp_path, code):
    entry = {"dtype": code, "shape": [2, 3], "data_offsets": [0, 24]}
    path = raw_safetensors(tmp_path / "d.safetensors", {"w": entry}, tensor_bytes(A))
    open_fails(path, "tensor 'w'", "unknown dtype")


def test_empty_tensor_with_absurd_dims(tmp_path):
    entry = {"dtype": "F32", "shape": [2**40, 2**40, 0], "data_offsets": [0, 0]}
    path = raw_safetensors(tmp_path / "z.safetensors", {"w": entry}, b"")
    open_fails(path, "tensor 'w'", "absurdly large")


@pytest.mark.parametrize("name", ["model.safetensors.index.json", "config.json"])
def test_hostile_json_in_index_or_config(tmp_path, name):
    save_state_dict({"a": torch.ones(1)}, tmp_path / "model.safetensors")
    if name == "model.safetensors.index.json":
        (tmp_path / "model.safetensors").unlink()
    (tmp_path / name).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        open_checkpoint(tmp_path)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    open_fails(fifo, "not a regular file")


def test_a_file_named_for_another_format_is_told_what_it_is(tmp_path):
    """The extension picks the reader; the first bytes say what the file really is."""
    state = {"w": torch.ones(2, 3)}
    pt_named_st = tmp_path / "model.safetensors"
    torch.save(state, pt_named_st)
    st_named_bin = tmp_path / "model.bin"
    save_state_dict(state, st_named_bin.with_suffix(".safetensors.tmp.safetensors"))
    os.replace(st_named_bin.with_suffix(".safetensors.tmp.safetensors"), st_named_bin)
    gguf = tmp_path / "llm.safetensors"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    import numpy as np

    np.savez(tmp_path / "arrays.npz", x=np.zeros(3))
    npz = tmp_path / "arrays.safetensors"
    os.replace(tmp_path / "arrays.npz", npz)
    cases = (
        (npz, "NumPy .npz archive, which Merger does not read"),
        (pt_named_st, "zip-format PyTorch checkpoint: rename it to end in .pt"),
        (st_named_bin, "safetensors file: rename it to end in .safetensors"),
        (gguf, "GGUF file, which Merger does not read"),
    )
    for path, hint in cases:
        with pytest.raises(CheckpointError) as err:
            open_checkpoint(path)
        assert hint in err.value.hint, (path, err.value)
    renamed = tmp_path / "model.pt"
    os.replace(pt_named_st, renamed)  # as the hint says
    with open_checkpoint(renamed) as ck:
        assert torch.equal(ck.get("w"), state["w"])
