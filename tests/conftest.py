"""Test-wide settings: Qt offscreen, caches and settings in a temporary folder."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MERGER_CACHE_DIR", tempfile.mkdtemp(prefix="merger-test-cache-"))
