"""Which devices are usable, and how much memory this process holds."""

from __future__ import annotations

import os

import psutil
import torch

from core.errors import MergerError


def available_devices() -> list[str]:
    """'cpu' always; 'cuda' when a CUDA device is visible to torch."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def resolve_device(choice: str | None) -> str:
    """'auto' → cuda if present else cpu; 'cuda' without a GPU is a clear error."""
    choice = (choice or "auto").lower()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise MergerError(
            "CUDA was asked for but torch sees no GPU",
            hint="install a CUDA build of torch, or choose the CPU",
        )
    if choice not in ("cpu",) and not choice.startswith("cuda"):
        raise MergerError(f"unknown device '{choice}'", hint="use auto, cpu or cuda")
    return choice


def memory_in_use() -> int:
    """Resident memory of this process, in bytes."""
    return psutil.Process(os.getpid()).memory_info().rss


def set_threads(n: int | None) -> None:
    """Limit torch's intra-op threads (0 or None leaves torch's default)."""
    if n:
        torch.set_num_threads(int(n))
