"""The window's session folder: where merges land until saved, and what a killed
window leaves behind.

Merged models are written to a private temporary folder and moved out by Save; closing
the window removes the folder. A window that could not close (killed, crashed, power
cut) leaves its folder with hundreds of MB in it, so each new window sweeps the folders
whose owner process is gone."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil

PREFIX = "merger-session-"
OWNER = "owner.pid"
# A folder without an owner file is one being created right now, or one from a version
# that wrote none: only this old is it surely abandoned.
_ORPHAN_AGE_S = 24 * 3600


def new_session() -> Path:
    """A fresh session folder that names its owner process (for later sweeps)."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    (folder / OWNER).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return folder


def sweep_stale_sessions(root: str | Path | None = None) -> list[Path]:
    """Remove session folders whose owner process has ended; returns those removed."""
    removed = []
    root = Path(root or tempfile.gettempdir())
    for folder in root.glob(f"{PREFIX}*"):
        if folder.is_dir() and not folder.is_symlink() and _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _abandoned(folder: Path) -> bool:
    try:
        pid_text, _, started = (folder / OWNER).read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        try:
            return time.time() - folder.stat().st_mtime > _ORPHAN_AGE_S
        except OSError:
            return False
    # the pid may have been reused by another process since: compare start times
    return _start_time(pid) != started.strip()


def _start_time(pid: int) -> str:
    """The process's start time as text, or "" if there is no such process."""
    try:
        return f"{psutil.Process(pid).create_time():.3f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return ""
