"""Where an output may go, and how it is published atomically.

Rules: an existing output is replaced only when asked; an input (or a folder holding one,
or a path inside one) is never written; outputs are built under a hidden temporary name
in the target's parent (same filesystem) and appear under their real name in one rename,
so a crash or cancel never leaves a half-written model where a user would find it.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import glob
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from core.errors import OutputError

FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def output_error(path: Path, exc: OSError, doing: str = "writing") -> OutputError:
    """Turn an OSError met while producing an output into a message for people."""
    if exc.errno in FULL:
        return OutputError(
            f"the disk is full while {doing} the output",
            file=path,
            hint="free some space or choose an output on another disk",
        )
    if exc.errno in DENIED:
        return OutputError(
            f"permission denied while {doing} the output",
            file=path,
            hint="choose a folder you can write to",
        )
    if exc.errno == errno.ENOTDIR:
        return OutputError(
            "a part of the output path is a file, not a folder",
            file=path,
            hint="choose another output path",
        )
    return OutputError(
        f"{doing} the output failed: {exc.strerror or exc}",
        file=path,
        hint="choose an output in a folder you can write to; system folders such as /proc "
        "take no files",
    )


# Names that promise another kind of file. An output is a .safetensors file or a folder,
# so `-o model.pt` would silently become a folder called model.pt: refuse it instead.
NOT_OUTPUT_SUFFIXES = (
    ".pt",
    ".pth",
    ".bin",
    ".ckpt",
    ".pkl",
    ".pickle",
    ".h5",
    ".hdf5",
    ".keras",
    ".onnx",
    ".gguf",
    ".ggml",
    ".msgpack",
    ".tflite",
    ".npz",
    ".npy",
    ".zip",
    ".tar",
    ".gz",
    ".json",
    ".yaml",
    ".yml",
    ".txt",
    ".csv",
    ".st",
)


def check_output_name(out: str | Path) -> None:
    """Refuse an output name with a file extension other than `.safetensors`.

    Outputs are written as one `.safetensors` file, or as a folder for any other name;
    a name like `merged.pt` would give a folder the user does not expect."""
    _check_not_empty(out)
    name = Path(out).name
    if len(name.encode("utf-8", "surrogateescape")) > _NAME_MAX:
        raise OutputError(
            f"the output's name is {len(name.encode('utf-8', 'surrogateescape'))} bytes long; "
            f"file systems allow {_NAME_MAX}",
            file=out,
            hint="choose a shorter name",
        )
    suffix = Path(name).suffix
    if suffix.lower() == ".safetensors" and suffix != ".safetensors":
        raise OutputError(
            f"the output extension '{suffix}' must be written '.safetensors' (lower case)",
            file=out,
            hint="name the output *.safetensors, or give a folder name",
        )
    close = difflib.get_close_matches(suffix.lower(), [".safetensors"], n=1, cutoff=0.85)
    if close and suffix.lower() != ".safetensors":
        raise OutputError(
            f"the output extension '{suffix}' looks like a misspelt '.safetensors'; it would "
            "be written as a folder of that name",
            file=out,
            hint="name the output *.safetensors, or give a folder name without an extension",
        )
    if suffix.lower() in NOT_OUTPUT_SUFFIXES:
        raise OutputError(
            f"cannot write a '{suffix}' file: outputs are a .safetensors file or a folder",
            file=out,
            hint=f"name the output *.safetensors, or give a folder name without "
            f"an extension such as '{suffix}'",
        )


def _check_not_empty(out: str | Path) -> None:
    """An empty name (`-o ''`) would become '.', the current folder: say what it is."""
    if not str(out).strip():
        raise OutputError(
            "the output name is empty",
            file="-o",
            hint="give a file name ending in .safetensors, or a folder name",
        )


def check_output_path(out: Path, protect: Sequence[str | Path], *, overwrite: bool) -> None:
    """Refuse outputs that would replace something without permission or touch an input."""
    check_output_name(out)
    target = Path(os.path.realpath(out))
    for p in protect:
        guarded = Path(os.path.realpath(Path(p).expanduser()))
        if target == guarded:
            raise OutputError(
                "the output is one of the input models",
                file=out,
                hint="choose another output name; inputs are never overwritten",
            )
        if guarded in target.parents:
            raise OutputError(
                f"the output lies inside the input {guarded}",
                file=out,
                hint="choose an output outside the input models' folders",
            )
        if target in guarded.parents:
            raise OutputError(
                f"the output folder contains the input {guarded}",
                file=out,
                hint="choose an output that does not hold any input model",
            )
    if os.path.lexists(out) and not _is_empty_folder(out):
        if not overwrite:
            raise OutputError(
                "the output already exists",
                file=out,
                hint="choose another name, or allow replacing it (--overwrite; the window asks)",
            )
        check_replaceable(out)
    if out.name.endswith(".safetensors") and out.is_dir():
        raise OutputError(
            "a folder has this name, but a .safetensors output is a single file",
            file=out,
            hint="choose another name",
        )


def _is_empty_folder(path: Path) -> bool:
    """An empty folder (`mkdir out && merger ... -o out`): filling it replaces nothing."""
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def check_output_early(out: str | Path, protect: Sequence[str | Path], *, overwrite: bool) -> None:
    """Everything about the output that can be known before the work starts: its name,
    that it replaces nothing unasked and no input, and that its folder can be written.

    Model-level methods (alignment) compute for seconds to minutes before the writer
    opens; they should not end in "permission denied". The writer checks again when it
    opens (the folder may change meanwhile)."""
    _check_not_empty(out)
    out = Path(out).expanduser()
    check_output_path(out, protect, overwrite=overwrite)
    check_folder_writable(out)


def check_folder_writable(out: Path) -> None:
    """That `out` can be created: its nearest existing ancestor is a folder we may write
    into (missing folders below it are created when writing)."""
    place = out.absolute().parent
    while not place.exists() and place.parent != place:
        place = place.parent
    if not place.is_dir():
        raise OutputError(
            f"{place} is a file, not a folder", file=out, hint="choose another output path"
        )
    if not os.access(place, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write into the folder {place}: permission denied",
            file=out,
            hint="choose a folder you can write to",
        )


# What a model folder may hold besides weights; anything else means it is not ours to delete.
MODEL_FOLDER_SUFFIXES = (
    ".safetensors",
    ".json",
    ".md",
    ".yaml",
    ".yml",
    ".model",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".tiktoken",
)
MODEL_FOLDER_NAMES = ("merges.txt", "vocab.txt", ".gitattributes")


def check_replaceable(out: Path) -> None:
    """With overwrite, replace only what looks like a model: a weights file, or a folder
    of weights and their usual companions. A folder of someone's documents is refused."""
    if out.is_symlink():
        return  # the link itself is replaced; what it points to is never touched
    if out.is_file():
        if out.name.lower().endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt")):
            return
        raise OutputError(
            "the output exists and is not a model file; it will not be replaced",
            file=out,
            hint="choose another output name",
        )
    if not out.is_dir():
        raise OutputError("the output exists and is not a file or folder", file=out)
    try:
        children = list(out.iterdir())
    except OSError as exc:
        raise output_error(out, exc, "inspecting") from None
    strangers = [
        c.name
        for c in children
        if c.is_dir()
        or not (c.name.lower().endswith(MODEL_FOLDER_SUFFIXES) or c.name in MODEL_FOLDER_NAMES)
    ]
    has_weights = any(
        c.name.lower().endswith((".safetensors", ".bin", ".pt", ".pth")) for c in children
    )
    if strangers or (children and not has_weights):
        shown = ", ".join(sorted(strangers)[:5]) or "no model weights"
        raise OutputError(
            f"the output folder exists and does not look like a model ({shown}); "
            "it will not be replaced",
            file=out,
            hint="choose another output name, or empty the folder yourself",
        )


def make_parent(out: Path) -> list[Path]:
    """Create the output's missing parent folders; returns those created (to undo)."""
    created: list[Path] = []
    parent = out.parent
    missing = []
    while not parent.exists():
        missing.append(parent)
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(
            f"{parent} is a file, not a folder", file=out, hint="choose another output path"
        )
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            remove_empty(created)
            raise output_error(folder, exc, "creating the folder for") from None
        created.append(folder)
    return created


def remove_empty(folders: Sequence[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


_NAME_MAX = 255  # bytes in one file name, on every common file system
_TEMP_STEM_MAX = 200  # bytes of the output's name kept in a temporary's (room for the tail)


def _temp_stem(out: Path) -> str:
    """The output's name as temporaries carry it: cut so that their names fit too."""
    raw = out.name.encode("utf-8", "surrogateescape")[:_TEMP_STEM_MAX]
    return raw.decode("utf-8", "ignore")


def temp_name(out: Path, kind: str = "tmp") -> Path:
    """A hidden sibling of `out`, on the same filesystem so a rename is atomic. It names
    the writing process, so a later run can tell a killed run's leftovers from a live
    run's work (`remove_stale_temps`)."""
    return out.parent / f".{_temp_stem(out)}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def remove_stale_temps(out: Path) -> list[Path]:
    """Delete the temporaries a killed run (SIGKILL, a power cut: no chance to clean up)
    left beside `out`: those whose process no longer exists. Returns what was removed.

    Only half-written outputs (`tmp`): a previous output renamed away (`old`) may be the
    only copy of it if the run died before the new one took its place."""
    removed = []
    try:
        siblings = list(out.parent.glob(f".{glob.escape(_temp_stem(out))}.tmp-*-*"))
    except OSError:
        return []
    stem = re.escape(_temp_stem(out))
    for item in siblings:
        match = re.fullmatch(rf"\.{stem}\.tmp-(\d+)-[0-9a-f]{{8}}", item.name)
        if match is None or _process_exists(int(match.group(1))):
            continue
        try:
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()
        except OSError:
            continue
        removed.append(item)
    return removed


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but belongs to someone else
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename durable; some filesystems refuse to fsync folders, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: Path, out: Path, *, overwrite: bool) -> list[Path]:
    """Move the finished `tmp` (file or folder) to `out` atomically.

    Without overwrite a file is published with link+unlink, which fails rather than
    replace something that appeared meanwhile. With overwrite the old output is renamed
    away first and deleted only after the new one is in place; a folder replacing a
    model folder keeps the old one's companions it does not write itself (tokenizer,
    README), which are returned.
    """
    carried: list[Path] = []
    if tmp.is_dir() or (overwrite and os.path.lexists(out) and not _is_plain_file(out)):
        carried = _publish_replacing(tmp, out, overwrite=overwrite)
    elif overwrite:
        os.replace(tmp, out)
    else:
        try:
            os.link(tmp, out)
        except FileExistsError:
            raise OutputError(
                "the output appeared while merging", file=out, hint="choose another name"
            ) from None
        except OSError:  # filesystems without hard links
            if os.path.lexists(out):
                raise OutputError("the output appeared while merging", file=out) from None
            os.rename(tmp, out)
        else:
            os.unlink(tmp)
    fsync_dir(out.parent)
    return carried


def _is_plain_file(p: Path) -> bool:
    return p.is_file() and not p.is_symlink()


def _publish_replacing(tmp: Path, out: Path, *, overwrite: bool) -> list[Path]:
    old = None
    if os.path.lexists(out) and not (_is_empty_folder(out) and tmp.is_dir()):
        if not overwrite:
            raise OutputError(
                "the output appeared while merging", file=out, hint="choose another name"
            )
        old = temp_name(out, "old")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    carried: list[Path] = []
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            if out.is_dir():
                carried = _carry_companions(old, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    return carried


# Files of a replaced model folder that describe the weights rather than the model: a
# new output brings its own, and an old one beside it would contradict the new weights.
_NOT_CARRIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json")
_NOT_CARRIED_NAMES = (
    "config.json",
    "merger_recipe.yaml",
    "adapter_config.json",  # would make the new full model load as a PEFT adapter
    "quantize_config.json",
    "quantization_config.json",
)


def _carry_companions(old: Path, new: Path) -> list[Path]:
    """Move the replaced folder's tokenizer, README and other companions into the new
    folder where it has none of that name: `--overwrite` replaces a merge, not the files
    that came with the model (check_replaceable let only such files be there)."""
    carried = []
    for item in sorted(old.iterdir()):
        name = item.name
        if (
            not item.is_file()
            or name.lower().endswith(_NOT_CARRIED_SUFFIXES)
            or name in _NOT_CARRIED_NAMES
            or os.path.lexists(new / name)
        ):
            continue
        with contextlib.suppress(OSError):
            os.rename(item, new / name)
            carried.append(new / name)
    return carried
