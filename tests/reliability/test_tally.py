"""The tally of issue 8.6: the whole corpus through core and the CLI, printed in CI output.

Inputs tried and clean errors are counts; crashes, payloads run and partial files left
must be 0 apart from the known bugs listed in known_bugs.py (strict both ways: a known
bug that stops failing must be removed from that list).
"""

from __future__ import annotations

from collections import Counter

from known_bugs import known


def test_tally(outcomes, capsys):
    counts = Counter()
    unexpected, fixed, known_lines = [], [], []
    for (case_id, front), o in sorted(outcomes.items()):
        counts["tried"] += 1
        counts[o.status] += 1
        counts["wrong message"] += o.status == "clean" and not o.right
        counts["silently accepted"] += o.status == "ok" and o.case.expect == "error"
        counts["payloads run"] += o.payload_ran
        counts["partial files left"] += bool(o.leftovers)
        bug = known(case_id, front)
        if not o.right and not bug:
            unexpected.append(o.describe())
        elif o.right and bug:
            fixed.append(f"{case_id} [{front}]")
        elif bug:
            known_lines.append(f"  {o.describe()[:160]}")
    crashes = counts["crash"] + counts["hang"] + counts["unclear"]
    lines = [
        "",
        "=== reliability tally (issue 8) ===",
        f"inputs tried:        {len({k[0] for k in outcomes})} inputs x 2 fronts = "
        f"{counts['tried']} runs",
        f"clean errors:        {counts['clean']}",
        f"accepted (valid):    {counts['ok']}",
        f"crashes:             {crashes} (crash {counts['crash']}, hang {counts['hang']}, "
        f"unclear exit {counts['unclear']})",
        f"payloads run:        {counts['payloads run']}",
        f"partial files left:  {counts['partial files left']}",
        f"silently accepted:   {counts['silently accepted']}",
        f"vague messages:      {counts['wrong message']}",
        f"known bugs (xfail):  {len(known_lines)}",
        *known_lines,
    ]
    with capsys.disabled():
        print("\n".join(lines))
    assert not unexpected, "\n".join(unexpected)
    assert not fixed, f"known bugs now pass; remove them from known_bugs.py: {fixed}"
