"""Which devices are usable, and how much memory this process holds."""

from __future__ import annotations

import os
import re

import psutil
import torch

from core.errors import MergerError


def available_devices() -> list[str]:
    """'cpu' always; 'cuda' when a CUDA device is visible to torch."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(choice: str | None) -> str:
    """The device name, normalised ('auto' when None); an unknown name is a clear error.

    Only the spelling is checked: whether a GPU is present is `resolve_device`'s concern."""
    name = "auto" if choice is None else str(choice).strip().lower()
    if not _DEVICE_NAME.fullmatch(name):
        raise MergerError(
            f"unknown device '{choice}'",
            hint=f"use one of {', '.join(DEVICE_CHOICES)}, where N is a GPU's number",
        )
    return name


def resolve_device(choice: str | None) -> str:
    """'auto' → cuda if present else cpu; 'cuda' without a GPU is a clear error."""
    choice = check_device_name(choice)
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise MergerError(
            "CUDA was asked for but torch sees no GPU",
            hint="install a CUDA build of torch, or choose the CPU",
        )
    return choice


def memory_in_use() -> int:
    """Resident memory of this process, in bytes."""
    return psutil.Process(os.getpid()).memory_info().rss


def set_threads(n: int | None) -> None:
    """Limit torch's intra-op threads (0 or None leaves torch's default)."""
    if n:
        torch.set_num_threads(int(n))
