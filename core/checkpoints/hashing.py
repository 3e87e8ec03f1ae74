"""SHA-256 of weight files, cached so re-merging the same inputs costs nothing.

The hash goes into the output's metadata so a merged file names exactly what it was made
from. Hashing multi-GB inputs takes seconds, so results are cached by (real path, size,
mtime) in memory and in `$MERGER_CACHE_DIR/hashes.json` (default `~/.cache/merger`).
A stale or unreadable cache is ignored, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from core.errors import CheckpointError

_BLOCK = 8 << 20
MAX_ENTRIES = 1000
_memory: dict[str, str] = {}
_lock = threading.Lock()


def cache_file() -> Path:
    """Where the persistent hash cache lives (MERGER_CACHE_DIR relocates it)."""
    root = os.environ.get("MERGER_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "merger"
    return base / "hashes.json"


def _key(files: Sequence[Path]) -> str:
    parts = []
    for f in files:
        st = os.stat(f)
        parts.append(f"{os.path.realpath(f)}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def files_sha256(files: Sequence[Path]) -> str:
    """Hex SHA-256 of the files' bytes concatenated in order (streamed, cached)."""
    try:
        key = _key(files)
    except OSError as exc:
        raise CheckpointError(f"cannot read the file: {exc.strerror}", file=exc.filename) from None
    with _lock:
        if key in _memory:
            return _memory[key]
    cached = _load_cache().get(key)
    if isinstance(cached, str):
        with _lock:
            _memory[key] = cached
        return cached
    digest = _compute(files)
    with _lock:
        _memory[key] = digest
    _store(key, digest)
    return digest


def _compute(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    for f in files:
        try:
            with open(f, "rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    h.update(view[:n])
        except OSError as exc:
            raise CheckpointError(f"cannot read the file: {exc.strerror}", file=f) from None
    return h.hexdigest()


def _load_cache() -> dict:
    try:
        doc = json.loads(cache_file().read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(key: str, digest: str) -> None:
    """Add one entry to the on-disk cache (atomic replace; failures are ignored)."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = _load_cache()
        doc.pop(key, None)
        doc[key] = digest
        for stale in list(doc)[:-MAX_ENTRIES]:  # oldest first: JSON keeps insertion order
            del doc[stale]
        fd, tmp = tempfile.mkstemp(prefix=".hashes-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
