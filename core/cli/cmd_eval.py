"""`merger eval`: loss and accuracy of classifiers on data — how good is the merge?

Two kinds of failure, reported differently. A problem of the data itself (no labels,
or examples that fit none of the models) is the command's one error, said once, as
every command says its error. A problem of one model (NaN weights, a shape the data does
not fit, a file that cannot be read) fails that model's row only: the others are still
scored, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from core.architectures import resolve_architecture
from core.checkpoints import open_checkpoint
from core.cli.output import merger_error_fields, print_json
from core.data import Dataset, load_dataset
from core.data.fit import check_fits
from core.errors import MergerError
from core.evaluate import check_labelled, evaluate
from core.validate import check_state_finite


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
    """One row per model, in the order given; a model that cannot be evaluated gets an
    error in its row (JSON) or its own line on stderr (text), and the exit code is 1."""
    data = load_dataset(args.data)
    check_labelled(data)
    outcomes: list[dict[str, Any] | MergerError] = []
    for path in args.models:
        try:
            outcomes.append(_evaluate_one(path, args.arch, data))
        except MergerError as exc:
            outcomes.append(exc)
    failed = [(path, o) for path, o in zip(args.models, outcomes, strict=True) if _failed(o)]
    shared = _data_error([exc for _, exc in failed], data) if len(failed) == len(outcomes) else None
    if shared is not None:
        raise shared  # the data fits none of the models: one error, said once
    if args.json:
        print_json(
            [
                {"model": path, "error": merger_error_fields(o)} if _failed(o) else o
                for path, o in zip(args.models, outcomes, strict=True)
            ]
        )
    else:
        rows = [o for o in outcomes if not _failed(o)]
        if rows:
            # what was assumed about the models (a detected family, a VGG's pools), once each
            for note in dict.fromkeys(note for row in rows for note in row["notes"]):
                print(f"note: {note}")
            _print_table(rows, data)
    for path, exc in failed:
        where = "" if exc.file == path else f"{path}: "
        print(f"merger: error: {where}{exc}", file=sys.stderr)
    return 1 if failed else 0


# Its loss would be NaN for a reason no score can show.
_BROKEN = (
    "the model cannot be evaluated; the checkpoint is broken, by a training run that diverged "
    "or a bad conversion: use one saved before the values went bad"
)


def _failed(outcome: object) -> bool:
    return isinstance(outcome, MergerError)


def _data_error(errors: list[MergerError], data: Dataset) -> MergerError | None:
    """The one error every model failed with, when it is about the data (it names the data
    file, not a model): repeating it per model would say nothing more."""
    if not errors or any(exc.file != data.where for exc in errors):
        return None
    return errors[0] if len({str(exc) for exc in errors}) == 1 else None


def _evaluate_one(path: str, arch_name: str | None, data: Dataset) -> dict[str, Any]:
    with open_checkpoint(path) as ckpt:
        state = ckpt.state_dict()
    check_state_finite(state, path, _BROKEN)
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
