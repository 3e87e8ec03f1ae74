"""The session folder: swept when its window was killed, removed when the app is
stopped by a signal (Ctrl+C, kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from merger_app._session import OWNER, PREFIX, sweep_stale_sessions

ROOT = Path(__file__).resolve().parents[2]


def make_session(root: Path, name: str, owner: str | None) -> Path:
    folder = root / f"{PREFIX}{name}"
    (folder / "merged-1").mkdir(parents=True)
    (folder / "merged-1" / "model.safetensors").write_bytes(b"x" * 1000)
    if owner is not None:
        (folder / OWNER).write_text(owner)
    return folder


def test_only_sessions_whose_owner_is_gone_are_swept(tmp_path):
    import psutil

    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(ended.stdout)
    me = psutil.Process(os.getpid())
    live = make_session(tmp_path, "live", f"{os.getpid()} {me.create_time():.3f}\n")
    dead = make_session(tmp_path, "dead", f"{dead_pid} 12345.000\n")
    reused = make_session(tmp_path, "reused", f"{os.getpid()} 1.000\n")  # same pid, older process
    fresh_orphan = make_session(tmp_path, "fresh", None)
    old_orphan = make_session(tmp_path, "old", None)
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old_orphan, (two_days_ago, two_days_ago))
    other = tmp_path / "not-ours"
    other.mkdir()
    removed = sweep_stale_sessions(tmp_path)
    assert sorted(p.name for p in removed) == sorted(p.name for p in (dead, reused, old_orphan))
    assert live.exists() and fresh_orphan.exists() and other.exists()
    assert not dead.exists() and not reused.exists() and not old_orphan.exists()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_closes_the_app_and_removes_its_session(tmp_path, sig, code):
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "TMPDIR": str(temp),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HOME": str(tmp_path),
        "MERGER_CACHE_DIR": str(tmp_path / "cache"),
    }
    app = subprocess.Popen(
        [sys.executable, "-m", "merger_app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(temp.glob(f"{PREFIX}*")) and time.monotonic() < deadline:
            assert app.poll() is None, app.communicate()
            time.sleep(0.1)
        assert list(temp.glob(f"{PREFIX}*")), "the window never made its session folder"
        time.sleep(1.0)  # the event loop is running
        app.send_signal(sig)
        _, err = app.communicate(timeout=30)
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == code, err
    assert "Traceback" not in err
    assert list(temp.glob(f"{PREFIX}*")) == []
