"""Merger's desktop app: a PySide6 window over the Qt-free engine in `core`.

Qt modules are named `qt_*.py` and hold `Qt*` classes; `_*.py` modules hold the
Qt-free helpers the window uses (formatting, recipe building), tested without a display.
Importing this package does not import Qt, so `merger_app.main` can print a clear
message when PySide6 is missing.
"""

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `merger-app`; see `merger_app.main`."""
    from merger_app.main import main as _main

    return _main(argv)
