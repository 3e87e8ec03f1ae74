"""The core jobs the window runs on its worker, built from frozen inputs (no widgets).

Each factory returns `job(progress) -> result` for `QtJobRunner.start`; everything the
job needs is captured when it is built on the GUI thread, so the worker never reads a
widget (napari #2697).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.jobs import Progress
from core.recipe import Recipe

Job = Callable[[Progress], Any]


def demo_folder() -> Path:
    """Where `--demo` keeps its models: $MERGER_CACHE_DIR/demo or ~/.cache/merger/demo."""
    root = os.environ.get("MERGER_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "merger") / "demo"


def merge_job(
    recipe: Recipe, out: Path, *, device: str, threads: int, allow_code: bool = False
) -> Job:
    """Merge `recipe` into `out` on the chosen device with the chosen thread count.

    `allow_code` is True only after the user agreed to run the architecture file."""

    def job(progress: Progress):
        from core.devices import resolve_device, set_threads
        from core.merge import run_merge

        set_threads(threads)
        return run_merge(
            recipe,
            out,
            progress=progress,
            overwrite=True,
            device=resolve_device(device),
            allow_code=allow_code,
        )

    return job


def export_job(
    src: Path,
    out: Path,
    *,
    dtype: str | None,
    shard_size: int | None,
    overwrite: bool,
    protect: Sequence[str | Path] = (),
) -> Job:
    """Copy the merged model to the user's path, format, dtype and shard size, never over
    `protect` (the models in the window) or the merge's inputs."""

    def job(progress: Progress):
        from core.merge import export_checkpoint

        return export_checkpoint(
            src,
            out,
            dtype=dtype,
            shard_size=shard_size,
            overwrite=overwrite,
            protect=protect,
            progress=progress,
        )

    return job


def demo_job(folder: Path) -> Job:
    """Make the demo models in `folder` if missing (they are reused when present)."""

    def job(progress: Progress):
        from core.demo import make_demo

        progress.update(0, 7, "Preparing the demo models")
        demo = make_demo(folder, log=progress.log, progress=progress)
        progress.update(7, 7, "Demo models ready")
        return demo

    return job


def remove_path(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
