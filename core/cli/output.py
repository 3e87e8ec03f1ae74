"""Formatting helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys
from typing import Any

from core.errors import MergerError


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def print_json(data: Any) -> None:
    """`data` as JSON on stdout. NaN and infinity are refused (`allow_nan=False`): they are
    not JSON, and strict parsers (jq, JavaScript) reject the whole document; a value that
    can be missing is written as null with a note saying why."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, allow_nan=False))
    sys.stdout.write("\n")


def error_fields(kind: str, message: str, **where: object) -> dict[str, str]:
    """The error object every command's --json writes, `{"kind", "message", "file",
    "tensor", "hint"}` (fields that do not apply are left out)."""
    fields = {k: str(v) for k, v in where.items() if v is not None}
    return {"kind": kind, "message": message, **fields}


def merger_error_fields(exc: MergerError) -> dict[str, str]:
    """`error_fields` of an error meant for people."""
    return error_fields("error", exc.message, file=exc.file, tensor=exc.tensor, hint=exc.hint)
