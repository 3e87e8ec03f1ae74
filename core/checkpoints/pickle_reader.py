"""Open torch pickles (`.pt .pth .bin .ckpt`) safely, and find the state dict inside.

Only `torch.load(weights_only=True)` is ever used: a restricted unpickler that builds
tensors and plain containers and refuses anything else, so a file can never run code.
With `mmap=True` the tensors stay on disk until read; the legacy (non-zip) format cannot
be mapped and is loaded whole.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from core.checkpoints.reader import (
    WRAPPER_PREFIXES,
    Checkpoint,
    Entry,
    LoadedTensor,
    strip_wrapper_prefixes,
)
from core.checkpoints.safetensors_reader import open_file_error, read_index, shard_paths
from core.checkpoints.sniff import sniff_hint
from core.checkpoints.tensor_info import DTYPE_CODES, TensorInfo
from core.errors import CheckpointError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")


def load_pickle(path: Path) -> Any:
    """`torch.load` with weights_only, mmapped when the format allows."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise CheckpointError(
                "the file is empty", file=path, hint="re-download or re-export it"
            )
        mmap = zipfile.is_zipfile(path)
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not found and _not_a_pickle(str(exc)):
            raise CheckpointError(
                "not a readable torch checkpoint: its contents are not a pickle torch can read",
                file=path,
                hint=sniff_hint(path)
                or "the file is truncated, corrupt or not a checkpoint; re-download or "
                "re-export it",
            ) from None
        raise CheckpointError(
            "the file holds code or Python objects that a safe load refuses"
            + (f" (it refers to {found.group(1)})" if found else ""),
            file=path,
            hint="Merger never runs code from model files; re-save the weights alone with "
            "torch.save(model.state_dict()) or as safetensors",
        ) from None
    except OSError as exc:
        raise open_file_error(path, exc) from None
    except Exception as exc:  # torch.load raises many types on damaged or foreign files
        if _is_text(path):  # torch's legacy reader says only "KeyError: 101" for text
            raise CheckpointError(
                "not a readable torch checkpoint: the file holds text",
                file=path,
                hint="give the model's weights file (.pt, .bin, .safetensors)",
            ) from None
        raise CheckpointError(
            f"not a readable torch checkpoint ({_first_sentence(exc)})",
            file=path,
            hint="the file is truncated or corrupt; re-download or re-export it",
        ) from None


def _is_text(path: Path) -> bool:
    """Whether the file starts like text (a note or a config saved under a model's name)."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and all(c.isprintable() or c in "\n\r\t" for c in text)


def _not_a_pickle(message: str) -> bool:
    """Whether torch's unpickler met bytes that are no pickle opcode at all (text, random
    data), rather than refusing an object it could have built (a class, a function)."""
    lowered = message.lower()
    return "unsupported operand" in lowered or "invalid load key" in lowered


def _first_sentence(exc: BaseException) -> str:
    text = str(exc).strip().split(". ")[0][:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _has_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, Mapping):
        return any(_has_tensor(v) for v in obj.values())
    return False


def unwrap_state_dict(obj: Any) -> tuple[dict[str, torch.Tensor], str | None]:
    """Find the weights in a loaded checkpoint object and flatten them to dotted names.

    Handles `{"state_dict": ...}`, `model`, `module`, `model_state_dict` wrappers,
    Lightning checkpoints (whose `model.` prefix is stripped when on every key),
    DataParallel `module.` prefixes and nested dicts. Non-tensor leaves are ignored.

    Returns the weights and, when a wrapper was chosen over other entries that also hold
    tensors (an `ema` copy, optimizer state), a note saying which was read and what was
    left out: a training checkpoint's other weight sets should not vanish silently.
    """
    lightning = isinstance(obj, Mapping) and "pytorch-lightning_version" in obj
    chosen: list[str] = []
    ignored: list[str] = []
    for _ in range(4):  # wrappers may nest, e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping):
            break
        key = next(
            (k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping) and _has_tensor(obj[k])),
            None,
        )
        if key is None:
            break
        prefix = "".join(f"{c}." for c in chosen)
        ignored += [f"{prefix}{k}" for k, v in obj.items() if k != key and _has_tensor(v)]
        chosen.append(key)
        obj = obj[key]
    flat: dict[str, torch.Tensor] = {}
    if isinstance(obj, Mapping):
        _flatten(obj, "", flat)
    prefixes = ("model.", *WRAPPER_PREFIXES) if lightning else WRAPPER_PREFIXES
    mapping, stripped = strip_wrapper_prefixes(list(flat), prefixes)
    flat = {mapping[k]: v for k, v in flat.items()}
    notes = []
    if ignored:
        shown = ", ".join(f"'{k}'" for k in ignored[:5])
        more = f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""
        notes.append(
            f"weights read from '{'.'.join(chosen)}'; also in the file, not read: {shown}{more}"
        )
    if stripped:  # merged outputs carry the shorter names: a load into the wrapper needs it
        notes.append(stripped)
    return flat, "; ".join(notes) or None


def _flatten(obj: Mapping, prefix: str, out: dict[str, torch.Tensor]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, Mapping):
            _flatten(value, name + ".", out)


def _entries(path: Path, state: dict[str, torch.Tensor]) -> dict[str, Entry]:
    """Describe each tensor, refusing what a merge could not read or write later."""
    entries: dict[str, Entry] = {}
    for name, tensor in state.items():
        problem = _unsupported(name, tensor)
        if problem:
            raise CheckpointError(problem[0], file=path, tensor=name, hint=problem[1])
        entries[name] = LoadedTensor(TensorInfo.of_tensor(name, tensor), tensor)
    return entries


def _unsupported(name: str, tensor: torch.Tensor) -> tuple[str, str] | None:
    if name == "__metadata__":
        return "the name '__metadata__' is reserved by safetensors", "rename the tensor"
    if tensor.layout != torch.strided or tensor.is_quantized:
        return f"layout {tensor.layout} is not supported", "convert it to a dense tensor"
    if tensor.dtype not in DTYPE_CODES:
        return (
            f"dtype {tensor.dtype} is not supported (Merger handles float, int, uint8, bool)",
            "convert the tensor or remove it from the checkpoint",
        )
    if tensor.device.type != "cpu":
        return (
            f"the tensor holds no data (device '{tensor.device.type}')",
            "save the checkpoint with its real weights",
        )
    return None


def open_pickle(path: Path, *, shown_path: Path | None = None, config=None) -> Checkpoint:
    """Open one torch pickle file."""
    obj = load_pickle(path)
    if isinstance(obj, torch.Tensor) or (
        isinstance(obj, list | tuple) and obj and all(isinstance(t, torch.Tensor) for t in obj)
    ):
        raise CheckpointError(
            "the file holds unnamed tensors, not a state dict (names mapped to tensors)",
            file=path,
            hint="save the model's weights with torch.save(model.state_dict(), path)",
        )
    state, note = unwrap_state_dict(obj)
    if not state:
        raise CheckpointError(
            "the file holds no tensors",
            file=path,
            hint="it is not a model checkpoint, or its weights are stored elsewhere",
        )
    entries = _entries(path, state)
    notes = [note] if note else []
    return Checkpoint(shown_path or path, "pytorch", [path], entries, config=config, notes=notes)


def open_sharded_pickle(index: Path, *, shown_path: Path, config=None) -> Checkpoint:
    """Open `pytorch_model.bin.index.json` and its shards."""
    weight_map = read_index(index)
    files = shard_paths(index, weight_map)
    entries: dict[str, Entry] = {}
    notes: list[str] = []
    for shard in files:
        state, note = unwrap_state_dict(load_pickle(shard))
        if note:
            notes.append(f"{shard.name}: {note}")
        for name, entry in _entries(shard, state).items():
            if name in entries:
                raise CheckpointError("the tensor appears in two shards", file=shard, tensor=name)
            entries[name] = entry
    missing = [n for n in weight_map if n not in entries]
    if missing:
        raise CheckpointError(
            f"the index names {len(missing)} tensor(s) no shard holds, e.g. '{missing[0]}'",
            file=index,
            hint="the index and the shards do not match; re-download them",
        )
    return Checkpoint(shown_path, "pytorch (sharded)", files, entries, config=config, notes=notes)
