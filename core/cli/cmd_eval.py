"""`merger eval`: loss and accuracy of classifiers on data — how good is the merge?"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from core.architectures import resolve_architecture
from core.checkpoints import open_checkpoint
from core.cli.output import print_json
from core.data import Dataset, load_dataset
from core.data.fit import check_fits
from core.errors import MergerError
from core.evaluate import check_weights_finite, evaluate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="loss and accuracy of models on data (classifiers)")
    p.add_argument(
        "models", nargs="+", metavar="MODEL", help="checkpoints to evaluate (files or folders)"
    )
    p.add_argument(
        "--data",
        required=True,
        help="digits (all 1,797 of scikit-learn's digits, so training digits too: for a "
        "held-out score give an .npz such as the demo's digits_test.npz), or an .npz with "
        "arrays x and y",
    )
    p.add_argument("--arch", help="a family name or path/to/model.py:factory; detected if left out")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """One row per model; a model that cannot be evaluated is reported on its own line
    (stderr) without losing the others' rows, and the exit code says so."""
    data = load_dataset(args.data)
    rows, failed = [], []
    for path in args.models:
        try:
            rows.append(_evaluate_one(path, args.arch, data))
        except MergerError as exc:
            failed.append(str(exc))
    if args.json:
        print_json(rows + [{"error": message} for message in failed])
    elif rows:
        # what was assumed about the models (a detected family, a VGG's pools), once each
        for note in dict.fromkeys(note for row in rows for note in row["notes"]):
            print(f"note: {note}")
        _print_table(rows, data)
    for message in failed:
        print(f"merger: error: {message}", file=sys.stderr)
    return 1 if failed else 0


def _evaluate_one(path: str, arch_name: str | None, data: Dataset) -> dict[str, Any]:
    with open_checkpoint(path) as ckpt:
        state = ckpt.state_dict()
    check_weights_finite(state, path)
    arch = resolve_architecture(
        arch_name, state, need_spec=False, source=path, input_shape=data.input_shape
    )
    check_fits(data, arch.input_shape)
    scores = evaluate(arch.build(state), data)
    notes = list(arch.notes)
    loss: float | None = scores["loss"]
    if not math.isfinite(scores["loss"]):
        loss = None
        notes.append(_no_loss_note(path, scores))
    return {
        "model": path,
        "architecture": arch.name,
        "detected": arch.detected,
        "loss": loss,
        "accuracy": scores["accuracy"],
        "n": scores["n"],
        "notes": notes,
    }


def _no_loss_note(path: str, scores: dict[str, float]) -> str:
    """Why a model with finite weights has no loss: its class scores overflow."""
    count, n = int(scores["nonfinite"]), int(scores["n"])
    return (
        f"{path}: no loss: its weights are finite, but its class scores are not (inf or "
        f"NaN, an overflow) on {count} of {n} example(s); those count as wrong in the "
        "accuracy when they hold NaN"
    )


def _print_table(rows: list[dict], data: Dataset) -> None:
    """Models, the architecture each was run as ('detected': guessed from its names and
    shapes, so a wrong guess shows), loss and accuracy."""
    archs = [r["architecture"] + (" (detected)" if r["detected"] else "") for r in rows]
    width = max(len("model"), *(len(r["model"]) for r in rows))
    arch_width = max(len("architecture"), *map(len, archs))
    print(
        f"{'model':<{width}}  {'architecture':<{arch_width}}  {'loss':>8}  {'accuracy':>8}   "
        f"({data.name}, {len(data)} example{'s' if len(data) != 1 else ''})"
    )
    for r, arch in zip(rows, archs, strict=True):
        loss = "n/a" if r["loss"] is None else f"{r['loss']:.4f}"
        print(f"{r['model']:<{width}}  {arch:<{arch_width}}  {loss:>8}  {r['accuracy']:8.1%}")
