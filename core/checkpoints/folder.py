"""Decide what a user-given path holds and open it: a weights file, an index, or a folder.

Hugging Face-style folders are resolved by the well-known names, safetensors first;
otherwise a folder with exactly one weights file is accepted. `config.json` beside the
weights is kept on the checkpoint so the output folder can carry it along.
"""

from __future__ import annotations

import stat
from pathlib import Path

from core.checkpoints.pickle_reader import open_pickle, open_sharded_pickle
from core.checkpoints.reader import Checkpoint
from core.checkpoints.safetensors_reader import (
    open_file_error,
    open_safetensors,
    open_sharded_safetensors,
    read_json,
)
from core.errors import CheckpointError

PICKLE_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")
WEIGHT_EXTENSIONS = (".safetensors", *PICKLE_EXTENSIONS)
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")
# Looked for in this order inside a folder.
PREFERRED_NAMES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


def is_checkpoint_path(path: str | Path) -> bool:
    """Cheap test (names only, no reading) used by drag-and-drop and file dialogs."""
    p = Path(path)
    try:
        if p.is_dir():
            return any(_looks_like_weights(c) for c in p.iterdir() if c.is_file())
        return p.is_file() and _looks_like_weights(p)
    except OSError:
        return False


def _looks_like_weights(p: Path) -> bool:
    name = p.name.lower()
    return name.endswith(WEIGHT_EXTENSIONS) or name.endswith(INDEX_SUFFIXES)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a model lazily: a weights file, an index file, or a folder holding them."""
    given = Path(path).expanduser()
    if not given.exists():
        raise open_file_error(given, FileNotFoundError(2, "No such file"))
    if given.is_dir():
        return _open_folder(given)
    return _open_file(given, shown=given, config=_config_for_file(given))


def _open_file(p: Path, *, shown: Path, config: dict | None) -> Checkpoint:
    require_regular_file(p)
    name = p.name.lower()
    if name.endswith(".safetensors.index.json"):
        return open_sharded_safetensors(p, shown_path=shown, config=config)
    if name.endswith(".bin.index.json") or name.endswith(".pt.index.json"):
        return open_sharded_pickle(p, shown_path=shown, config=config)
    if name.endswith(".safetensors"):
        return open_safetensors(p, shown_path=shown, config=config)
    if name.endswith(PICKLE_EXTENSIONS):
        return open_pickle(p, shown_path=shown, config=config)
    raise CheckpointError(
        "unknown file type",
        file=p,
        hint="give a .safetensors, .pt, .pth, .bin or .ckpt file, an index .json, "
        "or a folder holding one",
    )


def require_regular_file(p: Path) -> None:
    """Refuse FIFOs, devices and sockets before opening: reading a FIFO blocks forever."""
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise open_file_error(p, exc) from None
    if stat.S_ISDIR(mode):
        raise open_file_error(p, IsADirectoryError(21, "Is a directory"))
    if not stat.S_ISREG(mode):
        raise CheckpointError(
            "is not a regular file (a pipe, device or socket)",
            file=p,
            hint="give the path of a model file or folder",
        )


def _open_folder(folder: Path) -> Checkpoint:
    try:
        children = sorted(c for c in folder.iterdir() if c.is_file())
    except OSError as exc:
        raise open_file_error(folder, exc) from None
    config = _read_config(folder / "config.json")
    by_name = {c.name: c for c in children}
    for preferred in PREFERRED_NAMES:
        if preferred in by_name:
            return _open_file(by_name[preferred], shown=folder, config=config)
    candidates = [c for c in children if c.name.lower().endswith(INDEX_SUFFIXES)]
    if not candidates:
        candidates = [c for c in children if c.name.lower().endswith(".safetensors")]
    if not candidates:
        candidates = [c for c in children if c.name.lower().endswith(PICKLE_EXTENSIONS)]
    if len(candidates) == 1:
        return _open_file(candidates[0], shown=folder, config=config)
    if not candidates:
        found = ", ".join(c.name for c in children[:12]) or "nothing"
        more = f" and {len(children) - 12} more" if len(children) > 12 else ""
        raise CheckpointError(
            f"no model weights in this folder (found: {found}{more})",
            file=folder,
            hint="expected model.safetensors, a *.safetensors.index.json, pytorch_model.bin "
            "or a single .safetensors/.pt/.pth/.bin/.ckpt file",
        )
    raise CheckpointError(
        f"several weight files and no index: {', '.join(c.name for c in candidates[:8])}",
        file=folder,
        hint="give the path of the one file to use",
    )


def _config_for_file(p: Path) -> dict | None:
    """config.json beside a file that is a folder's canonical weights (or its index)."""
    name = p.name.lower()
    if name in PREFERRED_NAMES or name.endswith(INDEX_SUFFIXES):
        return _read_config(p.parent / "config.json")
    return None


def _read_config(p: Path) -> dict | None:
    if not p.is_file():
        return None
    doc = read_json(p, "config.json", "fix or remove it")
    if not isinstance(doc, dict):
        raise CheckpointError("config.json is not a JSON object", file=p, hint="fix or remove it")
    return doc
