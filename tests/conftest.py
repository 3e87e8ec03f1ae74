"""Test-wide settings: Qt offscreen, caches and settings in a temporary folder."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MERGER_CACHE_DIR", tempfile.mkdtemp(prefix="merger-test-cache-"))


@pytest.fixture
def read_only_folder(tmp_path):
    """An empty folder without write permission (restored afterwards so it can be
    cleaned up). `.denies` says whether it stops this process: root writes anyway."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        yield ReadOnly(folder, not os.access(folder, os.W_OK))
    finally:
        folder.chmod(0o755)


@dataclass(frozen=True)
class ReadOnly:
    path: Path
    denies: bool

    def require(self) -> Path:
        """The folder, or skip the test where permissions do not stop writing."""
        if not self.denies:
            pytest.skip("running as root: folder permissions do not stop writing")
        return self.path
