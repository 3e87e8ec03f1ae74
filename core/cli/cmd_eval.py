"""`merger eval`: loss and accuracy of classifiers on data — how good is the merge?"""

from __future__ import annotations

import argparse

from core.architectures import resolve_architecture
from core.checkpoints import open_checkpoint
from core.cli.output import print_json
from core.data import load_dataset
from core.data.fit import check_fits
from core.evaluate import evaluate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="loss and accuracy of models on data (classifiers)")
    p.add_argument("models", nargs="+", metavar="MODEL")
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
    data = load_dataset(args.data)
    rows = []
    for path in args.models:
        with open_checkpoint(path) as ckpt:
            state = ckpt.state_dict()
        arch = resolve_architecture(args.arch, state, need_spec=False, source=path)
        check_fits(data, arch.input_shape)
        scores = evaluate(arch.build(state), data)
        rows.append({"model": path, "architecture": arch.name, **scores})
    if args.json:
        print_json(rows)
        return 0
    width = max(len(r["model"]) for r in rows)
    print(f"{'model':<{width}}  {'loss':>8}  {'accuracy':>8}   ({data.name}, {len(data)} examples)")
    for r in rows:
        print(f"{r['model']:<{width}}  {r['loss']:8.4f}  {r['accuracy']:8.1%}")
    return 0
