"""The engine and the CLI work on a machine without Qt."""

from __future__ import annotations

import subprocess
import sys

BLOCK_QT = """
import sys
class _NoQt:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'shiboken6') or name.startswith(
                'matplotlib.backends.backend_qt'):
            raise ImportError(f'{name} is blocked: the engine must not need Qt')
sys.meta_path.insert(0, _NoQt())
import importlib, pkgutil, core
for mod in pkgutil.walk_packages(core.__path__, 'core.'):
    if not mod.name.endswith('__main__'):
        importlib.import_module(mod.name)
from core.cli import main
raise SystemExit(main(['methods']))
"""


def test_engine_and_cli_import_and_run_without_qt():
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_QT], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "task_arithmetic" in proc.stdout
