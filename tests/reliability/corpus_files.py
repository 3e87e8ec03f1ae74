"""Bad model files and folders for the corpus (kind "checkpoint")."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import torch
from corpus_base import (
    Case,
    good_safetensors,
    good_state,
    header_for,
    raw_safetensors,
    write_header_case,
)


class OsSystemPayload:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class ExecPayload:
    """Unpickling this runs Python code through builtins.exec."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


class SubprocessPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


PAYLOADS = (OsSystemPayload, ExecPayload, SubprocessPayload)


def _ck(root: Path, cases: list[Case], id: str, cat: str, path: Path, *mention: str, **kw):
    cases.append(Case(id, cat, "checkpoint", path, mention or (path.name,), **kw))


def header_cases(root: Path, cases: list[Case]) -> None:
    """Damaged safetensors headers: lengths, JSON, offsets, dtypes, shapes."""
    d = root / "header"
    d.mkdir()
    header, data = header_for(good_state())
    text = json.dumps(header).encode()
    raw_safetensors(d / "len_huge.safetensors", text, data, length=2**63)
    raw_safetensors(d / "len_beyond.safetensors", text, data, length=len(text) + len(data) + 9)
    (d / "len_short.safetensors").write_bytes(b"\x05\x00\x00")
    raw_safetensors(d / "len_zero.safetensors", b"", text + data)
    raw_safetensors(d / "bad_json.safetensors", b"{not json at all", data)
    raw_safetensors(d / "json_list.safetensors", b"[1, 2, 3]", data)
    raw_safetensors(d / "non_utf8.safetensors", b'{"\xff\xfe": 1}', data)
    raw_safetensors(d / "deep_json.safetensors", b"[" * 200_000 + b"]" * 200_000, data)
    raw_safetensors(
        d / "huge_int.safetensors",
        b'{"a": {"dtype": "F32", "shape": [1' + b"0" * 5000 + b'], "data_offsets": [0, 4]}}',
        data,
    )
    raw_safetensors(
        d / "nan_offsets.safetensors",
        b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [NaN, 4]}}',
        data,
    )
    for name in (
        "len_huge",
        "len_beyond",
        "len_short",
        "len_zero",
        "bad_json",
        "json_list",
        "non_utf8",
        "deep_json",
        "huge_int",
        "nan_offsets",
    ):
        _ck(root, cases, f"st_{name}", "safetensors header", d / f"{name}.safetensors")

    w = "layers.0.weight"

    def entry(**change):
        def mutate(h):
            h[w].update(change)

        return mutate

    def metadata(value):
        def mutate(h):
            h["__metadata__"] = value

        return mutate

    damaged = {
        "offsets_out_of_range": (entry(data_offsets=[0, 10_000]), w),
        "offsets_reversed": (entry(data_offsets=[48, 0]), w),
        "offsets_wrong_span": (entry(data_offsets=[0, 40]), w),
        "offsets_not_ints": (entry(data_offsets=["0", "48"]), w),
        "offsets_overlap": (
            lambda h: h["layers.0.bias"].update(data_offsets=[40, 56]),
            "layers.0.bias",
        ),
        "dtype_unknown": (entry(dtype="F4"), w),
        "dtype_missing": (lambda h: h[w].pop("dtype") and None, w),
        "dtype_list": (entry(dtype=["F32"]), w),
        "dtype_object": (entry(dtype={"x": 1}), w),
        "shape_negative": (entry(shape=[-4, -3]), w),
        "shape_float": (entry(shape=[4.0, 3]), w),
        "shape_string": (entry(shape="4x3"), w),
        "shape_bool": (entry(shape=[True, 3]), w),
        "shape_too_many_dims": (entry(shape=[1] * 100), w),
        "shape_absurd": (entry(shape=[2**40, 2**40]), w),
        "shape_absurd_overflow": (entry(shape=[2**64, 2**64, 2**64]), w),
        "entry_not_object": (lambda h: h.__setitem__(w, 5), w),
        "metadata_not_object": (metadata([1, 2]), None),
    }
    for name, (mutate, tensor) in damaged.items():
        path = write_header_case(d / f"{name}.safetensors", mutate)
        mention = (path.name, tensor) if tensor else (path.name,)
        _ck(root, cases, f"st_{name}", "safetensors header", path, *mention)
    odd = {
        "no_tensors": lambda h: {},
        "metadata_nested": metadata({"a": {"b": [1, 2]}}),
        "empty_name": lambda h: {"": h[w]},
        "zero_size_absurd": lambda h: {
            **h,
            "z": {"dtype": "F32", "shape": [2**40, 2**40, 0], "data_offsets": [0, 0]},
        },
        "reserved_metadata_name_only": lambda h: {"__metadata__": {"format": "pt"}},
    }
    for name, mutate in odd.items():
        path = write_header_case(d / f"{name}.safetensors", mutate)
        expect = "error" if name in ("no_tensors", "reserved_metadata_name_only") else "either"
        _ck(root, cases, f"st_{name}", "safetensors header", path, expect=expect)
    trunc = d / "truncated_data.safetensors"
    raw_safetensors(trunc, text, data[: len(data) // 2])
    _ck(root, cases, "st_truncated_data", "safetensors header", trunc)


def empty_and_wrong_type_cases(root: Path, cases: list[Case]) -> None:
    d = root / "wrong_type"
    d.mkdir()
    for ext in (".safetensors", ".pt", ".bin", ".ckpt", ".pth"):
        p = d / f"empty{ext}"
        p.write_bytes(b"")
        _ck(root, cases, f"empty{ext}", "empty file", p)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(64)
    (d / "picture.safetensors").write_bytes(png)
    (d / "picture.pt").write_bytes(png)
    good_safetensors(d / "really_safetensors.bin")
    good_safetensors(d / "really_safetensors.ckpt")
    (d / "notes.pt").write_text("these are my notes, not weights\n")
    (d / "notes.safetensors").write_text("these are my notes, not weights\n")
    (d / "model.txt").write_text("hello")
    with zipfile.ZipFile(d / "random.pt", "w") as z:
        z.writestr("archive/data.pkl", b"garbage")
    buf = io.BytesIO()
    torch.save(good_state(), buf)
    (d / "truncated.pt").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for name in (
        "picture.safetensors",
        "picture.pt",
        "really_safetensors.bin",
        "really_safetensors.ckpt",
        "notes.pt",
        "notes.safetensors",
        "model.txt",
        "random.pt",
        "truncated.pt",
    ):
        _ck(root, cases, f"wrong_{name}", "wrong extension", d / name)


def payload_cases(root: Path, cases: list[Case]) -> None:
    """Pickles that run code when loaded unsafely. Each would create its marker file."""
    d = root / "payload"
    d.mkdir()
    markers = root / "markers"
    markers.mkdir()
    for cls in PAYLOADS:
        tag = cls.__name__
        m1 = markers / f"{tag}-plain"
        (d / f"{tag}.pt").write_bytes(pickle.dumps({"w": torch.ones(2), "x": cls(m1)}))
        _ck(root, cases, f"payload_plain_{tag}", "code payload", d / f"{tag}.pt", marker=m1)
        m2 = markers / f"{tag}-torch"
        torch.save({"state_dict": good_state(), "evil": cls(m2)}, d / f"{tag}_zip.ckpt")
        _ck(root, cases, f"payload_torch_{tag}", "code payload", d / f"{tag}_zip.ckpt", marker=m2)
    m3 = markers / "folder"
    hf = d / "hf_folder"
    hf.mkdir()
    torch.save({"w": OsSystemPayload(m3)}, hf / "pytorch_model.bin")
    _ck(root, cases, "payload_in_folder", "code payload", hf, "pytorch_model.bin", marker=m3)
    m4 = markers / "shard"
    sharded = d / "sharded"
    sharded.mkdir()
    torch.save({"a": torch.ones(2)}, sharded / "part1.bin")
    torch.save({"b": ExecPayload(m4)}, sharded / "part2.bin")
    (sharded / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {"a": "part1.bin", "b": "part2.bin"}})
    )
    _ck(root, cases, "payload_in_shard", "code payload", sharded, "part2.bin", marker=m4)


def pickle_content_cases(root: Path, cases: list[Case]) -> None:
    """Pickles that load safely but hold odd things: nesting, no tensors, odd tensors."""
    d = root / "pickles"
    d.mkdir()
    t = torch.ones(2, 2)
    odd = {
        "nested_deep": ({"a": {"b": {"c": {"d": t}}}}, "either", ()),
        "list_of_tensors": ([t, t], "error", ()),
        "tuple_state": ((good_state(),), "error", ()),
        "no_tensors": ({"epoch": 3, "lr": 0.1}, "error", ()),
        "int_keys": ({0: t, 1: t}, "either", ()),
        "colliding_names": ({"a.b": t, "a": {"b": t * 2}}, "either", ()),
        "metadata_name": ({"__metadata__": t, "w": t}, "error", ("__metadata__",)),
        "complex_tensor": ({"w": torch.ones(2, dtype=torch.complex64)}, "error", ("'w'",)),
        "uint32_tensor": ({"w": torch.ones(2, dtype=torch.uint32)}, "error", ("'w'",)),
        "meta_tensor": ({"w": torch.empty(3, device="meta")}, "error", ("'w'",)),
        "sparse_tensor": ({"w": torch.eye(3).to_sparse()}, "error", ("'w'",)),
        "empty_tensors": ({"w": torch.empty(0, 5), "b": torch.empty(0)}, "either", ()),
    }
    for name, (obj, expect, tensor) in odd.items():
        p = d / f"{name}.pt"
        torch.save(obj, p)
        _ck(root, cases, f"pickle_{name}", "odd pickle content", p, p.name, *tensor, expect=expect)


def path_cases(root: Path, cases: list[Case]) -> None:
    """Paths that are not readable regular files, and folders without usable weights."""
    d = root / "paths"
    d.mkdir()
    (d / "a_folder.safetensors").mkdir()
    (d / "dangling.safetensors").symlink_to(d / "nowhere.safetensors")
    (d / "loop_a.safetensors").symlink_to(d / "loop_b.safetensors")
    (d / "loop_b.safetensors").symlink_to(d / "loop_a.safetensors")
    good = good_safetensors(d / "good.safetensors")
    (d / "zero.safetensors").symlink_to("/dev/zero")
    for name in (
        "a_folder.safetensors",
        "dangling.safetensors",
        "loop_a.safetensors",
        "zero.safetensors",
    ):
        _ck(root, cases, f"path_{name}", "unreadable path", d / name)
    inside = good / "inner.safetensors"
    _ck(root, cases, "path_inside_a_file", "unreadable path", inside, "inner.safetensors")
    fifo = d / "pipe.safetensors"
    os.mkfifo(fifo)
    _ck(
        root,
        cases,
        "path_fifo",
        "unreadable path",
        fifo,
        time_limit=3.0,
        unblock=lambda: _release_fifo(fifo),
    )
    sock = d / "socket.safetensors"
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
    _ck(root, cases, "path_socket", "unreadable path", sock)
    folders = {
        "empty_folder": {},
        "readme_only": {"README.md": b"# my model\n"},
        "config_only": {"config.json": b'{"model_type": "mlp"}'},
        "several_weights": {"a.safetensors": None, "b.safetensors": None},
        "broken_config": {"config.json": b"{oops", "model.safetensors": None},
        "index_not_json": {"model.safetensors.index.json": b"{"},
        "index_list": {"model.safetensors.index.json": b"[1]"},
        "index_empty_map": {"model.safetensors.index.json": b'{"weight_map": {}}'},
        "index_missing_shard": {
            "model.safetensors.index.json": b'{"weight_map": {"w": "gone.safetensors"}}'
        },
        "index_deep_json": {"model.safetensors.index.json": b"[" * 200_000},
        "config_deep_json": {"config.json": b"[" * 200_000, "model.safetensors": None},
        "config_huge_int": {"config.json": b"1" * 5000, "model.safetensors": None},
        "index_escapes": {"model.safetensors.index.json": b'{"weight_map": {"w": "/etc/passwd"}}'},
    }
    for name, files in folders.items():
        folder = d / name
        folder.mkdir()
        for fname, content in files.items():
            if content is None:
                good_safetensors(folder / fname)
            else:
                (folder / fname).write_bytes(content)
        mention = ("passwd",) if name == "index_escapes" else (name,)
        _ck(root, cases, f"folder_{name}", "folder", folder, *mention)
    nested = d / "weights_is_a_folder"
    (nested / "model.safetensors").mkdir(parents=True)
    _ck(root, cases, "folder_weights_is_a_folder", "folder", nested, "model.safetensors")


def _release_fifo(fifo: Path) -> None:
    """Open the write end and close it at once: a reader blocked in open() gets EOF."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


def build_file_cases(root: Path) -> list[Case]:
    cases: list[Case] = []
    for build in (
        header_cases,
        empty_and_wrong_type_cases,
        payload_cases,
        pickle_content_cases,
        path_cases,
    ):
        build(root, cases)
    return cases
