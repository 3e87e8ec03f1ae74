"""Typed access to the app's QSettings: geometry, recent files, folders, device, threads.

The window receives its `QtAppSettings`; the app opens the user's (INI format, so the
file is readable and tests can point it elsewhere), tests pass one over a tmp file.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

MAX_RECENT = 10
DEVICES = ("auto", "cpu", "cuda")


class QtAppSettings:
    """A thin typed layer over QSettings; every getter has a safe default."""

    def __init__(self, settings: QSettings | None = None) -> None:
        self.qsettings = settings or QSettings(
            QSettings.Format.IniFormat, QSettings.Scope.UserScope, "Merger", "merger"
        )

    @classmethod
    def at(cls, path: str | Path) -> QtAppSettings:
        return cls(QSettings(str(path), QSettings.Format.IniFormat))

    # -- geometry -------------------------------------------------------------------------
    def geometry(self) -> QByteArray | None:
        value = self.qsettings.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def state(self) -> QByteArray | None:
        value = self.qsettings.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_geometry(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        self.qsettings.setValue("window/state", state)

    # -- recent files and folders -----------------------------------------------------------
    def recent_models(self) -> list[str]:
        return self._list("recent/models")

    def add_recent_models(self, paths: list[str]) -> None:
        self._push("recent/models", paths)

    def recent_recipes(self) -> list[str]:
        return self._list("recent/recipes")

    def add_recent_recipe(self, path: str) -> None:
        self._push("recent/recipes", [path])

    def clear_recent(self) -> None:
        self.qsettings.remove("recent")

    def last_folder(self, kind: str) -> str:
        return str(self.qsettings.value(f"folders/{kind}", "") or "")

    def set_last_folder(self, kind: str, path: str | Path) -> None:
        p = Path(path).expanduser().absolute()  # a later start may be in another folder
        self.qsettings.setValue(f"folders/{kind}", str(p if p.is_dir() else p.parent))

    # -- compute ------------------------------------------------------------------------------
    def device(self) -> str:
        value = str(self.qsettings.value("compute/device", "auto") or "auto")
        return value if value in DEVICES else "auto"

    def set_device(self, device: str) -> None:
        self.qsettings.setValue("compute/device", device if device in DEVICES else "auto")

    def threads(self) -> int:
        """Torch threads; 0 means torch's default."""
        try:
            return max(0, int(self.qsettings.value("compute/threads", 0) or 0))
        except (TypeError, ValueError):
            return 0

    def set_threads(self, n: int) -> None:
        self.qsettings.setValue("compute/threads", max(0, int(n)))

    def sync(self) -> None:
        self.qsettings.sync()

    # -- internals ------------------------------------------------------------------------------
    def _list(self, key: str) -> list[str]:
        value = self.qsettings.value(key, [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or []) if v]

    def _push(self, key: str, paths: list[str]) -> None:
        """Absolute paths first (a relative one would mean another file, or none, once
        the app starts from another folder), without repeats, at most MAX_RECENT."""
        items = [str(Path(p).expanduser().absolute()) for p in paths]
        items += [p for p in self._list(key) if p not in items]
        self.qsettings.setValue(key, items[:MAX_RECENT])
