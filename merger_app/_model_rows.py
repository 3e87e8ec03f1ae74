"""The models the user loaded, as plain data: one `ModelRow` per checkpoint.

The Qt table model shows and edits a list of these; building recipes and checking what
blocks a merge work on the same list without Qt. `summarize` reads headers only
(`core.checkpoints.open_checkpoint` is lazy), so adding a model is instant.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from core.errors import MergerError
from merger_app._format import dtype_name

Role = Literal["base", "input"]
ROLES: tuple[Role, ...] = ("input", "base")


@dataclass(frozen=True)
class ModelRow:
    """One loaded checkpoint: what the table shows and what the recipe needs."""

    path: str
    name: str
    role: Role = "input"
    values: dict[str, Any] = field(default_factory=dict)  # per-model parameters
    format: str = ""
    num_parameters: int | None = None
    dtype: str = ""
    total_bytes: int | None = None
    problem: str | None = None  # why it cannot be merged with the others, if so
    notes: tuple[str, ...] = ()  # how it was read (which of several weight sets)
    # its weight files, resolved: a folder and the file inside it are one model
    files: tuple[str, ...] = ()
    batchnorm: bool = False  # holds BatchNorm running statistics (re-estimation applies)
    unreadable: str | None = None  # why its files cannot be read since they changed on disk:
    # 'it is no longer on disk', 'it changed on disk and cannot be read now: …'

    def with_(self, **changes: Any) -> ModelRow:
        return replace(self, **changes)

    @property
    def disk_files(self) -> tuple[str, ...]:
        """The files that hold it on disk: its resolved weight files, else its path."""
        return self.files or (self.path,)


def normalize_path(path: str | Path) -> str:
    """Absolute, with `..` and `~` resolved, so one file loaded twice is recognised.

    Symlinks are kept as given: the path people chose is the one they recognise.
    """
    return os.path.abspath(os.path.expanduser(str(path)))


def display_name(path: str | Path) -> str:
    """The name people recognise: the file name, or the folder for HF-style folders.

    A weight file called `model.safetensors` inside a folder is named after the folder.
    """
    p = Path(path)
    generic = {
        "model.safetensors",
        "pytorch_model.bin",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    }
    if p.name in generic and p.parent.name:
        return p.parent.name
    return p.name or str(p)


def main_dtype(dtypes: list[Any]) -> str:
    """The dtype most parameters have, marked 'mixed' when the model holds several
    (integer buffers such as BatchNorm's counter are weighed by size, so rarely decide)."""
    if not dtypes:
        return ""
    counts = Counter(dtype_name(d) for d in dtypes)
    top, _ = counts.most_common(1)[0]
    # integer buffers beside float weights (BatchNorm's counter) are not a mix of
    # precisions, which is what '(mixed)' warns of
    floats = {name for name in counts if "float" in name}
    mixed = len(floats) > 1 or (not floats and len(counts) > 1)
    return top + (" (mixed)" if mixed else "")


def summarize(path: str | Path) -> ModelRow:
    """Open `path` (headers only) and describe it; CheckpointError if it is no model."""
    from core.checkpoints import open_checkpoint

    ckpt = open_checkpoint(path)
    try:
        infos = ckpt.infos()
        weighted: list[Any] = []
        for info in infos:  # weight dtypes by size so a few int buffers do not dominate
            weighted.extend([info.dtype] * max(1, min(info.nbytes // 4096, 64)))
        return ModelRow(
            path=str(path),
            name=display_name(path),
            format=ckpt.format,
            num_parameters=ckpt.num_parameters,
            dtype=main_dtype(weighted),
            total_bytes=ckpt.total_bytes,
            notes=tuple(ckpt.notes),
            files=tuple(os.path.realpath(f) for f in ckpt.files),
            batchnorm=any(i.name.endswith("running_var") for i in infos),
        )
    finally:
        ckpt.close()


def reread(row: ModelRow) -> ModelRow:
    """`row` described anew from its files, which changed on disk (a training run wrote
    them again, a copy was cut short, they were removed). What the user set (name, role,
    values) is kept; what the files hold is read again. Files that cannot be read any more
    leave the row in place with the reason, so the table says what happened to it."""
    files = row.disk_files
    if not any(os.path.exists(f) for f in files):
        return row.with_(unreadable="it is no longer on disk", total_bytes=None)
    try:
        fresh = summarize(row.path)
    except (MergerError, OSError) as exc:
        sizes = [os.path.getsize(f) for f in files if os.path.isfile(f)]
        why = exc.message if isinstance(exc, MergerError) and exc.file else str(exc)
        return row.with_(
            unreadable=f"it changed on disk and cannot be read now: {why}",
            total_bytes=sum(sizes) if sizes else None,
        )
    return row.with_(
        format=fresh.format,
        num_parameters=fresh.num_parameters,
        dtype=fresh.dtype,
        total_bytes=fresh.total_bytes,
        notes=fresh.notes,
        files=fresh.files,
        batchnorm=fresh.batchnorm,
        unreadable=None,
    )


def set_role(rows: list[ModelRow], index: int, role: Role) -> list[ModelRow]:
    """Give row `index` the role; only one base exists, so a previous base becomes an input."""
    out = []
    for i, row in enumerate(rows):
        if i == index:
            out.append(row.with_(role=role))
        elif role == "base" and row.role == "base":
            out.append(row.with_(role="input"))
        else:
            out.append(row)
    return out


def move(rows: list[ModelRow], index: int, delta: int) -> list[ModelRow]:
    """Rows with row `index` moved by `delta` places (clamped to the list)."""
    target = max(0, min(len(rows) - 1, index + delta))
    out = list(rows)
    out.insert(target, out.pop(index))
    return out
