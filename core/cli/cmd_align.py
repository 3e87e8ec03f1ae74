"""`merger align`: write model B permuted to match model A; B's function is unchanged."""

from __future__ import annotations

import argparse
import json

from core import __version__
from core.alignment.activation_matching import METRICS
from core.alignment.align import Alignment, align
from core.checkpoints import open_checkpoint, save_state_dict
from core.checkpoints.output_paths import check_output_early
from core.cli.cmd_merge import device_option
from core.cli.output import print_json
from core.cli.progress_bar import TerminalBar
from core.data import Dataset, load_dataset
from core.errors import IncompatibleModelsError
from core.jobs import Progress
from core.methods import REGISTRY
from core.methods.rebasin import traced_on_data
from core.provenance import config_json
from core.validate import check_models, check_state_finite

# The method's own words, so the CLI and the window describe the metrics alike.
_METRIC_HELP = REGISTRY.get("activation_matching").param("metric").help


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="permute model B's hidden units to match model A")
    p.add_argument("model_a", metavar="A", help="the reference model")
    p.add_argument("model_b", metavar="B", help="the model to permute")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="B_ALIGNED",
        help="where to write the permuted B (.safetensors file or folder)",
    )
    p.add_argument(
        "--arch",
        help="a family name (mlp, vgg, resnet20, resnet18, resnet50) or "
        "path/to/model.py:factory; detected when left out",
    )
    p.add_argument(
        "--by",
        choices=("weights", "activations"),
        default="weights",
        help="match weights (data-free, default) or activations on --data",
    )
    p.add_argument(
        "--data", help="digits, or an .npz with array x (y, the labels, is optional here)"
    )
    p.add_argument(
        "--metric",
        choices=METRICS,
        default="correlation",
        help=f"with --by activations: {_METRIC_HELP[0].lower()}{_METRIC_HELP[1:]}",
    )
    p.add_argument("--max-iter", type=_positive, default=100, help="most weight-matching sweeps")
    p.add_argument("--seed", type=int, default=0, help="seed of the sweep order")
    p.add_argument(
        "--solver",
        choices=("auto", "scipy", "auction"),
        default="auto",
        help="linear-assignment solver: auction (compiled, exact; the default where numba "
        "is installed) or scipy (the reference)",
    )
    p.add_argument("--device", default="cpu", type=device_option, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--overwrite", action="store_true", help="replace B_ALIGNED if it exists")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    def check(args: argparse.Namespace) -> None:
        """Options that do not go together: a malformed command line (exit 2)."""
        if args.by == "activations" and not args.data:
            p.error("--by activations needs --data (digits, or an .npz with inputs x)")

    p.set_defaults(func=cmd_align, check=check)


def _positive(text: str) -> int:
    """A whole number of at least 1 (argparse's own message would name this function)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _check_same_architecture(path_a: str, path_b: str) -> None:
    """B must have A's tensors, with A's shapes: say which file differs, from the headers
    (the check merges and the window make, `validate.check_models`).

    Each file is opened first, so that a missing, truncated or unsafe file gets its own
    message and hint (the tensor, what to do), not the advice about architectures."""
    for path in (path_a, path_b):
        with open_checkpoint(path):
            pass
    report = check_models([path_a, path_b], path_a, extra_keys="error")
    if not report.ok:
        path, reason = report.first_problem()  # type: ignore[misc]
        raise IncompatibleModelsError(
            reason,
            file=path,
            hint="align needs two models of the same architecture and width; "
            "`merger info` lists each model's tensors",
        )


def _unused_options(args: argparse.Namespace, result: Alignment, data: Dataset | None) -> list[str]:
    """Options the chosen matching does not read: said, not silently dropped. Data that
    shaped a user's model's tracing input is said to have done that, not to be unused."""
    if args.by == "weights":
        notes = []
        shape = traced_on_data(args.arch, result.arch, data) if data is not None else []
        if shape:
            notes.append(
                f"--data is used by --by weights only for its examples' shape {shape}, to "
                f"trace {result.arch.name} (the matching compares the weights alone)"
            )
        elif data is not None:
            notes.append("--data is not used by --by weights (it compares the weights alone)")
        if args.metric != "correlation":
            notes.append("--metric applies to --by activations; not used by --by weights")
        return notes
    if args.max_iter != 100:
        return ["--max-iter applies to --by weights; activation matching solves once"]
    return []


def cmd_align(args: argparse.Namespace) -> int:
    # before any work: a wrong name, an existing output or a read-only folder is refused
    check_output_early(args.output, [args.model_a, args.model_b], overwrite=args.overwrite)
    _check_same_architecture(args.model_a, args.model_b)
    with open_checkpoint(args.model_a) as a, open_checkpoint(args.model_b) as b:
        state_a, state_b = a.state_dict(), b.state_dict()
        dtypes = {k: v.dtype for k, v in state_b.items()}
        config = b.config
        sources = [{"path": str(c.path.resolve()), "sha256": c.sha256()} for c in (a, b)]
        read = [
            f"{p}: {note}" for p, c in ((args.model_a, a), (args.model_b, b)) for note in c.notes
        ]
    for path, state in ((args.model_a, state_a), (args.model_b, state_b)):
        check_state_finite(state, path)
    data = load_dataset(args.data, labels=False) if args.data else None
    bar = None if (args.quiet or args.json) else TerminalBar()
    try:
        result = align(
            {k: v.float() if v.is_floating_point() else v for k, v in state_a.items()},
            {k: v.float() if v.is_floating_point() else v for k, v in state_b.items()},
            arch=args.arch,
            method="weight" if args.by == "weights" else "activation",
            data=data,
            max_iter=args.max_iter,
            seed=args.seed,
            solver=args.solver,
            metric=args.metric,
            device=args.device,
            progress=Progress(bar),
            source=args.model_a,
        )
    finally:
        if bar is not None:
            bar.close()
    read += _unused_options(args, result, data)
    aligned = {k: v.to(dtypes[k]) for k, v in result.aligned_b.items()}
    perms = {g: p.tolist() for g, p in result.perms.items()}
    metadata = {
        "merger_version": __version__,
        "merger_aligned_to": sources[0]["path"],
        "merger_aligned_from": sources[1]["path"],
        "merger_sources": json.dumps(sources),
        "merger_architecture": result.arch.name,
        "merger_alignment": f"{args.by.removesuffix('s')} matching"
        + (f" on {args.data}" if args.data else "")
        + f", {result.sweeps} sweep(s)" * (args.by == "weights"),
        "merger_permutations": json.dumps(perms),
    }
    folder = not str(args.output).endswith(".safetensors")
    extra = {"config.json": config_json(config, None)} if config and folder else None
    files = save_state_dict(
        aligned,
        args.output,
        metadata=metadata,
        overwrite=args.overwrite,
        protect=[args.model_a, args.model_b],
        extra_files=extra,
    )
    summary = {
        "out": str(args.output),
        "files": [str(f) for f in files],
        "architecture": result.arch.name,
        "objective_before": result.objective_before,
        "objective_after": result.objective_after,
        "sweeps": result.sweeps,
        "notes": read + result.notes,
    }
    if args.json:
        print_json(summary)
    else:
        for note in read:
            print(f"note: {note}")
        for note in result.notes:
            print(note)
        same = "same function as B"
        if result.arch.detected:  # only as true as the detected forward pass
            same += f" if the model is the detected {result.arch.name}"
        done = "B permuted to match A" if result.arch.spec.groups else "B as it is"
        print(f"wrote {args.output}: {done} ({same})")
    return 0
