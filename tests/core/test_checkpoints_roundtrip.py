"""Round trips through our writer and reader: every dtype, shards, metadata, folders."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from checkpoint_fixtures import good_file

from core.checkpoints import (
    SAFETENSORS_DTYPES,
    CheckpointWriter,
    TensorInfo,
    is_checkpoint_path,
    open_checkpoint,
    parse_size,
    save_state_dict,
)
from core.errors import CheckpointError, RecipeError


def sample(dtype: torch.dtype, shape=(3, 5)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 3).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -1000), min(info.max, 1000), shape, generator=gen).to(dtype)


@pytest.mark.parametrize("dtype", list(SAFETENSORS_DTYPES.values()), ids=str)
def test_every_dtype_round_trips_bit_exactly(tmp_path, dtype):
    state = {"x": sample(dtype), "scalar": sample(dtype, ()), "empty": sample(dtype, (0, 4))}
    out = tmp_path / "m.safetensors"
    assert save_state_dict(state, out) == [out]
    with open_checkpoint(out) as ck:
        assert ck.keys() == ["x", "scalar", "empty"]
        for name, t in state.items():
            got = ck.get(name)
            assert got.dtype == dtype and got.shape == t.shape
            assert torch.equal(got.reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))
    # the reference implementation reads our file too
    if dtype in (torch.float32, torch.bfloat16, torch.int64, torch.bool):
        ref = safetensors.torch.load_file(out)
        assert all(torch.equal(ref[k], v) for k, v in state.items())


def test_odd_sized_tensors_before_wider_ones_are_read_correctly(tmp_path):
    # 3 fp16 values (6 bytes) put the next fp32 tensor at an unaligned offset
    state = {"h": torch.tensor([1.0, 2.0, 3.0]).half(), "f": torch.tensor([4.5, -1.0])}
    out = tmp_path / "m.safetensors"
    save_state_dict(state, out)
    with open_checkpoint(out) as ck:
        assert torch.equal(ck.get("f"), state["f"])
    assert torch.equal(safetensors.torch.load_file(out)["f"], state["f"])


def test_reader_reads_files_written_by_the_reference_library(tmp_path):
    state = {"w": torch.randn(4, 4), "b": torch.randn(4).bfloat16(), "i": torch.arange(3)}
    path = tmp_path / "ref.safetensors"
    safetensors.torch.save_file(state, path, metadata={"k": "v"})
    with open_checkpoint(path) as ck:
        assert set(ck.keys()) == set(state) and ck.metadata == {"k": "v"}
        assert all(torch.equal(ck.get(k), v) for k, v in state.items())


def test_get_casts_and_fills_the_given_buffer(tmp_path):
    path, tensors = good_file(tmp_path / "g.safetensors")
    with open_checkpoint(path) as ck:
        buf = torch.full((2, 3), -7.0, dtype=torch.float64)
        got = ck.get("a", dtype=torch.float64, out=buf)
        assert got is buf and torch.equal(buf, tensors["a"].double())
        same = torch.empty(2, 3)
        assert ck.get("a", out=same) is same and torch.equal(same, tensors["a"])
        with pytest.raises(ValueError):
            ck.get("a", out=torch.empty(3, 2))
        with pytest.raises(CheckpointError, match="no tensor"):
            ck.get("missing")


def test_get_returns_private_copies(tmp_path):
    path, tensors = good_file(tmp_path / "g.safetensors")
    before = path.read_bytes()
    with open_checkpoint(path) as ck:
        ck.get("a").add_(100)
        assert torch.equal(ck.get("a"), tensors["a"])
    assert path.read_bytes() == before


def test_conversion_chunks_cover_the_whole_tensor(tmp_path, monkeypatch):
    import core.checkpoints.reader as reader

    monkeypatch.setattr(reader, "CONVERT_ELEMENTS", 7)  # many small chunks, one partial
    t = torch.randn(50).bfloat16()
    save_state_dict({"t": t}, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "m.safetensors") as ck:
        assert torch.equal(ck.get("t", dtype=torch.float32), t.float())


def test_state_dict_casts_floats_only(tmp_path):
    state = {"w": torch.randn(2, 2).half(), "n": torch.tensor(5)}
    save_state_dict(state, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "m.safetensors") as ck:
        sd = ck.state_dict(dtype=torch.float32)
        assert sd["w"].dtype == torch.float32 and sd["n"].dtype == torch.int64
        assert ck.num_parameters == 5 and ck.total_bytes == 8 + 8


def test_save_with_dtype_keeps_integer_buffers(tmp_path):
    state = {"w": torch.randn(2, 2), "steps": torch.tensor(3)}
    save_state_dict(state, tmp_path / "m.safetensors", dtype=torch.bfloat16)
    with open_checkpoint(tmp_path / "m.safetensors") as ck:
        assert ck.info("w").dtype == torch.bfloat16 and ck.info("steps").dtype == torch.int64
        assert torch.equal(ck.get("w"), state["w"].bfloat16())


def test_sharded_folder_respects_the_size_and_keeps_order(tmp_path):
    state = {f"t{i}": torch.full((10,), float(i)) for i in range(7)}  # 40 bytes each
    out = tmp_path / "sharded"
    files = save_state_dict(state, out, shard_size=100)  # two tensors per shard
    names = [f.name for f in files]
    assert names == [f"model-0000{k}-of-00004.safetensors" for k in range(1, 5)] + [
        "model.safetensors.index.json"
    ]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 7 * 40
    assert index["weight_map"]["t0"] == names[0] and index["weight_map"]["t6"] == names[3]
    with open_checkpoint(out) as ck:
        assert ck.format == "safetensors (sharded)" and len(ck.files) == 4
        assert ck.keys() == list(state)
        assert all(torch.equal(ck.get(k), v) for k, v in state.items())
    with open_checkpoint(out / "model.safetensors.index.json") as ck:
        assert len(ck) == 7


def test_shard_boundary_is_exact_and_big_tensors_get_their_own_shard(tmp_path):
    state = {
        "a": torch.zeros(10),
        "b": torch.zeros(10),
        "big": torch.zeros(100),
        "c": torch.zeros(1),
    }
    files = save_state_dict(state, tmp_path / "o", shard_size=80)  # a+b exactly fill one shard
    with open_checkpoint(tmp_path / "o") as ck:
        by_file = {}
        for name in ck:
            by_file.setdefault(ck._entries[name].file, []).append(name)
        assert list(by_file.values()) == [["a", "b"], ["big"], ["c"]]
    assert len(files) == 4


def test_one_shard_folder_is_plain_model_safetensors(tmp_path):
    files = save_state_dict(
        {"a": torch.ones(2)}, tmp_path / "o", extra_files={"config.json": b"{}"}
    )
    assert [f.name for f in files] == ["model.safetensors", "config.json"]
    with open_checkpoint(tmp_path / "o") as ck:
        assert ck.config == {} and ck.format == "safetensors"


def test_metadata_survives_and_set_metadata_rewrites_the_header(tmp_path):
    out = tmp_path / "m.safetensors"
    plan = [TensorInfo.of("w", (2, 2), torch.float32)]
    with CheckpointWriter(out, plan, metadata={"recipe": "linear"}) as w:
        w.write("w", torch.eye(2))
        w.set_metadata("sha256", "ab" * 32)
        w.set_metadata("recipe", "ties")
        w.commit()
    with open_checkpoint(out) as ck:
        assert ck.metadata == {"format": "pt", "recipe": "ties", "sha256": "ab" * 32}
        assert torch.equal(ck.get("w"), torch.eye(2))
    assert safetensors.torch.load_file(out)["w"].equal(torch.eye(2))


def test_metadata_larger_than_the_reserved_room_moves_the_data(tmp_path):
    out = tmp_path / "big"
    state = {f"t{i}": torch.randn(50) for i in range(3)}
    plan = [TensorInfo.of_tensor(k, v) for k, v in state.items()]
    with CheckpointWriter(out, plan, shard_size=400) as w:
        for k, v in state.items():
            w.write(k, v)
        w.set_metadata("recipe", "x" * 100_000)
        w.commit()
    with open_checkpoint(out) as ck:
        assert ck.metadata["recipe"] == "x" * 100_000
        assert all(torch.equal(ck.get(k), v) for k, v in state.items())
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["recipe"] == "x" * 100_000


def test_folder_with_config_and_single_file_paths(tmp_path):
    folder = tmp_path / "hf"
    save_state_dict({"w": torch.ones(3)}, folder, extra_files={"config.json": b'{"a": 1}'})
    with open_checkpoint(folder) as ck:
        assert (
            ck.config == {"a": 1}
            and ck.path == folder
            and ck.files == [folder / "model.safetensors"]
        )
    with open_checkpoint(folder / "model.safetensors") as ck:
        assert ck.config == {"a": 1}


def test_folder_prefers_safetensors_over_pickle(tmp_path):
    save_state_dict({"w": torch.ones(3)}, tmp_path / "m" / "model.safetensors")
    torch.save({"w": torch.zeros(3)}, tmp_path / "m" / "pytorch_model.bin")
    with open_checkpoint(tmp_path / "m") as ck:
        assert ck.format == "safetensors" and torch.equal(ck.get("w"), torch.ones(3))


def test_folder_with_one_oddly_named_weights_file(tmp_path):
    save_state_dict({"w": torch.ones(3)}, tmp_path / "m" / "weights-final.safetensors")
    (tmp_path / "m" / "notes.txt").write_text("hi")
    with open_checkpoint(tmp_path / "m") as ck:
        assert ck.keys() == ["w"]


def test_is_checkpoint_path(tmp_path):
    path, _ = good_file(tmp_path / "g.safetensors")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    assert is_checkpoint_path(path) and is_checkpoint_path(tmp_path)
    assert not is_checkpoint_path(tmp_path / "notes.txt")
    assert not is_checkpoint_path(tmp_path / "empty")
    assert not is_checkpoint_path(tmp_path / "nope.safetensors")


def test_sha256_is_of_the_concatenated_files_and_cached(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("MERGER_CACHE_DIR", str(tmp_path / "cache"))
    state = {f"t{i}": torch.randn(10) for i in range(3)}
    save_state_dict(state, tmp_path / "s", shard_size=40)
    with open_checkpoint(tmp_path / "s") as ck:
        expected = hashlib.sha256(b"".join(f.read_bytes() for f in ck.files)).hexdigest()
        assert ck.sha256() == expected
    cache = json.loads((tmp_path / "cache" / "hashes.json").read_text())
    assert list(cache.values()) == [expected]


def test_sha256_changes_when_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGER_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "m.safetensors"
    save_state_dict({"w": torch.zeros(4)}, out)
    with open_checkpoint(out) as ck:
        first = ck.sha256()
    save_state_dict({"w": torch.ones(4)}, out, overwrite=True)
    with open_checkpoint(out) as ck:
        assert ck.sha256() != first


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5_000_000_000),
        ("500M", 500_000_000),
        ("1.5G", 1_500_000_000),
        ("1000000", 1_000_000),
        ("2GiB", 2 * 1024**3),
        ("64kb", 64_000),
        (" 3 mib ", 3 * 1024**2),
        (123, 123),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "5XB", "-1G", "0", "1iB", "five"])
def test_parse_size_rejects_nonsense(text):
    with pytest.raises(RecipeError):
        parse_size(text)


def test_hash_cache_keeps_only_the_newest_entries(tmp_path, monkeypatch):
    import core.checkpoints.hashing as hashing

    monkeypatch.setenv("MERGER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(hashing, "MAX_ENTRIES", 2)
    digests = []
    for i in range(3):
        path = tmp_path / f"m{i}.safetensors"
        save_state_dict({"w": torch.full((2,), float(i))}, path)
        with open_checkpoint(path) as ck:
            digests.append(ck.sha256())
    cache = json.loads((tmp_path / "cache" / "hashes.json").read_text())
    assert list(cache.values()) == digests[1:]


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
@pytest.mark.parametrize("sharded", [False, True])
def test_a_wrappers_prefix_is_stripped_from_safetensors_as_from_pickles(tmp_path, prefix, sharded):
    """The same DataParallel / torch.compile model saved as .pt or .safetensors reads
    under the same names, with the same note, and the right bytes behind each name."""
    from core.checkpoints import open_checkpoint, save_state_dict

    state = {"fc.weight": sample(torch.float32), "fc.bias": sample(torch.float32, (3,))}
    wrapped = {f"{prefix}{k}": v for k, v in state.items()}
    out = tmp_path / ("folder" if sharded else "m.safetensors")
    save_state_dict(wrapped, out, shard_size=64 if sharded else None)
    torch.save(wrapped, tmp_path / "m.pt")
    for path in (out, tmp_path / "m.pt"):
        with open_checkpoint(path) as ck:
            assert sorted(ck.keys()) == ["fc.bias", "fc.weight"]
            assert [n for n in ck.notes if f"without the prefix '{prefix}'" in n], ck.notes
            for name, value in state.items():
                assert torch.equal(ck.get(name), value)
