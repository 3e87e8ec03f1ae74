"""Can these models be merged? Keys, shapes and dtypes, checked from headers alone.

The check runs before any tensor is read, so a merge never fails half-way for a reason
the headers already showed (mergekit's users meet such errors after long downloads).
The reference model is the base when there is one, else the first input: the output
has exactly its tensors. Extra tensors in other models follow an explicit policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


def _prefix_hint(missing: Sequence[str], extra: Sequence[str], ref_name: str) -> str:
    """When every missing name is present with one extra (or one fewer) leading prefix
    (`model.` from Lightning, `backbone.`), say so: the weights are there, renamed."""
    for longer, shorter, whose in ((extra, missing, "here"), (missing, extra, f"in {ref_name}")):
        if not shorter or len(longer) < len(shorter):
            continue
        first = next((n for n in longer if n.endswith("." + shorter[0])), None)
        if first is None:
            continue
        prefix = first[: len(first) - len(shorter[0])]
        names = set(longer)
        if all(prefix + n in names for n in shorter):
            return (
                f"; the names carry the prefix '{prefix}' {whose}: the same weights, "
                "named differently (re-save that model without the prefix)"
            )
    return ""


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
        ref_name = Path(ref_path).name
        missing = [n for n in ref if n not in infos]
        extra = [n for n in infos if n not in ref]
        if missing:
            reasons.append(
                f"lacks {len(missing)} tensor(s) that {ref_name} has: {_listing(missing)}"
                + _prefix_hint(missing, extra, ref_name)
            )
        if extra:
            text = f"has {len(extra)} tensor(s) that {ref_name} lacks: {_listing(extra)}"
            if extra_keys == "error":
                reasons.append(text)
            else:
                report.notes.append(f"{path}: {text}; they are left out of the result")
        shapes = [n for n, i in ref.items() if n in infos and infos[n].shape != i.shape]
        if shapes:
            first = shapes[0]
            reasons.append(
                f"a different architecture: {len(shapes)} tensor(s) differ in shape from "
                f"{ref_name}, e.g. '{first}' is {list(infos[first].shape)} here and "
                f"{list(ref[first].shape)} there"
            )
        kinds = [
            n
            for n, i in ref.items()
            if n in infos and infos[n].shape == i.shape and _kind(infos[n].dtype) != _kind(i.dtype)
        ]
        if kinds:
            first = kinds[0]
            reasons.append(
                f"{len(kinds)} tensor(s) hold another kind of number than in {ref_name}, "
                f"e.g. '{first}' is {infos[first].dtype} here and {ref[first].dtype} there"
            )
    return report
