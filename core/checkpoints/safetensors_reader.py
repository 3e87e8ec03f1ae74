"""Open `.safetensors` files, single or sharded by a `*.safetensors.index.json`.

Only headers are read here; tensor bytes are read later by `Checkpoint.get`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.checkpoints.reader import (
    Checkpoint,
    Entry,
    FileTensor,
    renamed_entries,
    strip_wrapper_prefixes,
)
from core.checkpoints.safetensors_format import SafetensorsHeader, header_length, read_header
from core.errors import CheckpointError


def open_file_error(path: Path, exc: OSError) -> CheckpointError:
    """Turn an OSError met while opening an input into a message for people."""
    if isinstance(exc, FileNotFoundError):
        return CheckpointError("no such file or folder", file=path, hint=_missing_hint(path))
    if isinstance(exc, IsADirectoryError):
        return CheckpointError("is a folder where a weights file was expected", file=path)
    if isinstance(exc, PermissionError):
        return CheckpointError(
            "permission denied", file=path, hint="make the file readable for your user"
        )
    return CheckpointError(f"cannot read the file: {exc.strerror or exc}", file=path)


def _missing_hint(path: Path) -> str:
    """'check the path', or, for what looks like a Hugging Face model ID (`org/name`, as
    mergekit recipes give), that IDs are not downloaded."""
    text = str(path)
    parts = text.split("/")
    weights = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json", ".yaml")
    if (
        len(parts) == 2
        and all(parts)
        and not text.startswith((".", "~"))
        and path.suffix.lower() not in weights
        and not Path(parts[0]).exists()  # a local folder: a typo in a path, not an ID
    ):
        return (
            f"Merger reads local files only and does not download model IDs: download it "
            f"first, e.g. huggingface-cli download {text} --local-dir {parts[1]}, and give "
            "that folder"
        )
    return "check the path"


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Read and validate the header of one safetensors file (reads only the header)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            first8 = f.read(8)
            n = header_length(path, size, first8)
            raw = first8 + f.read(n)
    except OSError as exc:
        raise open_file_error(path, exc) from None
    return read_header(path, size, raw)


def open_safetensors(path: Path, *, shown_path: Path | None = None, config=None) -> Checkpoint:
    """Open a single safetensors file."""
    header = read_safetensors_header(path)
    entries: dict[str, Entry] = {
        t.info.name: FileTensor(t.info, 0, t.start, t.end) for t in header.tensors
    }
    entries, notes = _unwrapped(entries)
    return Checkpoint(
        shown_path or path,
        "safetensors",
        [path],
        entries,
        config=config,
        metadata=header.metadata,
        notes=notes,
    )


def _unwrapped(entries: dict[str, Entry]) -> tuple[dict[str, Entry], list[str]]:
    """Entries without a training wrapper's prefix on every name, as pickles are read."""
    mapping, note = strip_wrapper_prefixes(list(entries))
    if note is None:
        return entries, []
    return renamed_entries(entries, mapping), [note]


def read_json(path: Path, what: str, hint: str) -> object:
    """A JSON file beside the weights (index, config); every way it can be bad is one error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise open_file_error(path, exc) from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, absurd nesting or ints
        raise CheckpointError(
            f"{what} is not valid JSON ({str(exc)[:120]})", file=path, hint=hint
        ) from None


def read_index(path: Path) -> dict[str, str]:
    """The `weight_map` (tensor name -> shard file name) of a sharded-model index."""
    doc = read_json(path, "the index", "re-download it")
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(
            "the index has no 'weight_map' naming the shard of each tensor",
            file=path,
            hint="re-download it",
        )
    if not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError("the index's weight_map values must be file names", file=path)
    return weight_map


def shard_paths(index: Path, weight_map: dict[str, str]) -> list[Path]:
    """The shard files an index names, in first-use order; missing ones are an error."""
    names = list(dict.fromkeys(weight_map.values()))
    escaping = [n for n in names if Path(n).is_absolute() or Path(n).name != n]
    if escaping:  # shards live beside their index; anything else reads files it should not
        raise CheckpointError(
            f"the index names shard(s) outside its folder: {', '.join(escaping[:3])}",
            file=index,
            hint="an index may only name plain file names in its own folder",
        )
    paths = [index.parent / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"the index names shard(s) that are missing: {', '.join(missing)}",
            file=index,
            hint="download every shard into the same folder",
        )
    return paths


def open_sharded_safetensors(index: Path, *, shown_path: Path, config=None) -> Checkpoint:
    """Open a sharded safetensors model through its index file."""
    weight_map = read_index(index)
    files = shard_paths(index, weight_map)
    entries: dict[str, Entry] = {}
    metadata: dict[str, str] = {}
    for i, shard in enumerate(files):
        header = read_safetensors_header(shard)
        metadata.update(header.metadata)
        for t in header.tensors:
            if t.info.name in entries:
                raise CheckpointError(
                    "the tensor appears in two shards",
                    file=shard,
                    tensor=t.info.name,
                    hint="the shards come from different exports; re-download them",
                )
            entries[t.info.name] = FileTensor(t.info, i, t.start, t.end)
    for name, shard_name in weight_map.items():
        entry = entries.get(name)
        if entry is None or files[entry.file].name != shard_name:
            raise CheckpointError(
                f"the index places this tensor in {shard_name} but that shard lacks it",
                file=index,
                tensor=name,
                hint="the index and the shards do not match; re-download them",
            )
    entries, notes = _unwrapped(entries)
    return Checkpoint(
        shown_path,
        "safetensors (sharded)",
        files,
        entries,
        config=config,
        metadata=metadata,
        notes=notes,
    )
