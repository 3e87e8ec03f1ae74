"""Bugs this suite found in files other people own, until they are fixed.

Each entry: corpus case id -> (fronts where it fails, what is wrong and the fix). Tests
mark these `xfail(strict=True)`, and the tally requires the failures to be exactly these,
so a fix shows up as an unexpected pass and the entry must then be removed here.
"""

from __future__ import annotations

KNOWN_BUGS: dict[str, tuple[tuple[str, ...], str]] = {}


def known(case_id: str, front: str) -> str | None:
    """The reason if (case, front) is a known bug, else None."""
    entry = KNOWN_BUGS.get(case_id)
    if entry and front in entry[0]:
        return entry[1]
    return None
