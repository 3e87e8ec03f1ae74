"""Build the bad-input corpus (issue 8 item 1) into a folder; nothing binary is committed.

`build_corpus(root)` writes every case under `root` and returns the `Case` list. Run as
a script (`python tests/reliability/corpus.py DIR`) to inspect the files by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

from corpus_base import Case, good_safetensors, good_state
from corpus_files import build_file_cases
from corpus_recipes import build_recipe_cases

__all__ = ["Case", "build_corpus", "good_safetensors", "good_state"]


def build_corpus(root: str | Path) -> list[Case]:
    """Write the corpus under `root` (which must be empty or absent); return its cases."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    good_safetensors(root / "good.safetensors")
    cases = build_file_cases(root) + build_recipe_cases(root)
    ids = [c.id for c in cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise AssertionError(f"duplicate corpus ids: {sorted(dupes)}")
    return cases


if __name__ == "__main__":
    for case in build_corpus(sys.argv[1]):
        print(f"{case.id:40} {case.kind:10} {case.path}")
