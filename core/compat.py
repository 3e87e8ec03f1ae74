"""Can these models be merged? Keys, shapes and dtypes, checked from headers alone.

The check runs before any tensor is read, so a merge never fails half-way for a reason
the headers already showed (mergekit's users meet such errors after long downloads).
The reference model is the base when there is one, else the first input: the output
has exactly its tensors. Extra tensors in other models follow an explicit policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from core.checkpoints import TensorInfo

ExtraKeys = Literal["ignore", "error"]
_MAX_LISTED = 5


@dataclass
class CompatReport:
    """Problems per model path; `notes` hold things that are fine but worth saying."""

    reference: str
    problems: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def summary(self) -> str:
        lines = []
        for path, reasons in self.problems.items():
            lines.extend(f"{path}: {r}" for r in reasons)
        return "\n".join(lines) if lines else "compatible"

    def first_problem(self) -> tuple[str, str] | None:
        for path, reasons in self.problems.items():
            if reasons:
                return path, reasons[0]
        return None


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "float"
    return "bool" if dtype == torch.bool else "integer"


def compare(
    reference: tuple[str, Mapping[str, TensorInfo]],
    others: Sequence[tuple[str, Mapping[str, TensorInfo]]],
    *,
    extra_keys: ExtraKeys = "ignore",
) -> CompatReport:
    """Compare each model's tensors with the reference's."""
    ref_path, ref = reference
    report = CompatReport(reference=ref_path, problems={ref_path: []})
    if not ref:
        report.problems[ref_path].append("holds no tensors")
    for path, infos in others:
        reasons: list[str] = report.problems.setdefault(path, [])
        if path == ref_path:
            continue
        missing = [n for n in ref if n not in infos]
        extra = [n for n in infos if n not in ref]
        if missing:
            reasons.append(
                f"lacks {len(missing)} tensor(s) the reference {ref_path} has: {_listing(missing)}"
            )
        if extra:
            text = f"has {len(extra)} tensor(s) the reference lacks: {_listing(extra)}"
            if extra_keys == "error":
                reasons.append(text)
            else:
                report.notes.append(f"{path}: {text}; they are left out of the result")
        for name, info in ref.items():
            other = infos.get(name)
            if other is None:
                continue
            if other.shape != info.shape:
                reasons.append(
                    f"tensor '{name}' has shape {list(other.shape)}, the reference "
                    f"has {list(info.shape)}"
                )
            elif _kind(other.dtype) != _kind(info.dtype):
                reasons.append(f"tensor '{name}' is {other.dtype}, the reference is {info.dtype}")
    return report
