"""The status bar's permanent fields: device and memory in use, refreshed every second."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

from merger_app._format import human_bytes


def describe_device(choice: str, threads: int) -> str:
    """'Device: CPU (auto) · 4 threads' — what a merge will run on."""
    from core.devices import resolve_device

    try:
        device = resolve_device(choice)
    except Exception:  # noqa: BLE001 - e.g. CUDA chosen without a GPU: say so, do not crash
        return f"Device: {choice.upper()}, not available"
    text = f"Device: {device.upper() if device in ('cpu', 'cuda') else device}"
    if choice == "auto":
        text += " (auto)"
    if threads:
        text += f" · {threads} thread{'s' if threads != 1 else ''}"
    return text


class QtStatusFields(QWidget):
    """Adds the device and memory labels to a status bar and keeps them current."""

    def __init__(self, bar: QStatusBar) -> None:
        super().__init__(bar)
        self.device = QLabel(bar)
        self.memory = QLabel(bar)
        self.memory.setToolTip("Memory this process holds (resident set size)")
        bar.addPermanentWidget(self.device)
        bar.addPermanentWidget(self.memory)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.refresh_memory)
        self.timer.start()
        self.refresh_memory()
        self.hide()

    def set_device(self, choice: str, threads: int) -> None:
        self.device.setText(describe_device(choice, threads))

    def refresh_memory(self) -> None:
        from core.devices import memory_in_use

        self.memory.setText(f"Memory: {human_bytes(memory_in_use())}")
