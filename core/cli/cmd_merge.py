"""`merger merge`, `merger run` and `merger demo`: make merged models."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from core.checkpoints import parse_size
from core.checkpoints.output_paths import check_folder_writable
from core.cli.output import print_json
from core.cli.progress_bar import TerminalBar
from core.errors import MergerError, OutputError, RecipeError
from core.jobs import Progress
from core.merge import MergeResult, run_merge, validate_recipe
from core.methods import REGISTRY
from core.provenance import absolute_recipe
from core.recipe import DTYPES, ModelEntry, Recipe, normalize_dtype


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard-size",
        metavar="SIZE",
        type=option_type(parse_size),
        help="split the output into shards of at most SIZE (e.g. 5GB); needs a folder",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it exists (inputs are never overwritten)",
    )
    p.add_argument(
        "--extra-keys",
        choices=("ignore", "error"),
        default="ignore",
        help="tensors some models have and the reference lacks: leave them out "
        "(ignore, default) or refuse to merge (error)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        type=device_option,
        help="auto, cpu, cuda or cuda:N (model-level methods)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def option_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type` from a converter that raises MergerError: a bad value is a
    malformed command line, one line and exit 2, like argparse's own checks."""

    def option(text: str) -> Any:
        try:
            return convert(text)
        except MergerError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    option.__name__ = getattr(convert, "__name__", "value")  # argparse names it on errors
    return option


def _device(text: str) -> str:
    from core.devices import check_device_name

    return check_device_name(text)


def _dtype(text: str) -> str | None:
    try:
        return normalize_dtype(text, key="dtype")
    except RecipeError:
        raise RecipeError(f"'{text}' is not a dtype; use one of {', '.join(DTYPES)}") from None


def _key_value(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set expects KEY=VALUE, not '{text}'")
    return text


device_option = option_type(_device)


def _allow_code_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-code",
        action="store_true",
        help="let the recipe's `arch: file.py:factory` import that Python file "
        "(off by default: a recipe from elsewhere must not run code)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge models given on the command line")
    p.add_argument(
        "models", nargs="+", metavar="MODEL", help="input checkpoints (files or folders)"
    )
    p.add_argument("--method", required=True, help=f"one of {', '.join(REGISTRY.names())}")
    p.add_argument("--base", help="the base model (common ancestor) for task-vector methods")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=option_type(_key_value),
        help="a method parameter; repeatable. Per-model parameters take one value "
        "or one per model: --set weight=0.7,0.3. Gradients: --set t=[0,0.5,1]",
    )
    p.add_argument(
        "--dtype",
        type=option_type(_dtype),
        help=f"compute dtype ({', '.join(DTYPES)}); default float32, float64 for float64 models",
    )
    p.add_argument(
        "--out-dtype",
        type=option_type(_dtype),
        help="output dtype; default: --dtype, else the inputs' own",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for random methods (DARE)")
    p.add_argument(
        "--data",
        help="data the method runs the models on (activation matching, BatchNorm statistics): "
        "digits, or an .npz with array x (and y, labels, not needed here)",
    )
    p.add_argument("--arch", help="architecture: a family name or path/to/model.py:factory")
    p.add_argument(
        "--save-recipe",
        metavar="FILE",
        help="also write the recipe as YAML (after the merge succeeds; runs with `merger run`)",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="output .safetensors file, or a folder"
    )
    _add_output_options(p)

    merge_parser = p  # `p` names the next command's parser by the time check runs

    def check(args: argparse.Namespace) -> None:
        """A parameter set twice would silently keep the last: a malformed command line."""
        keys = [item.partition("=")[0].strip() for item in args.set]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            merge_parser.error(
                f"--set {twice[0]}= is given {keys.count(twice[0])} times; give it once"
            )

    p.set_defaults(func=cmd_merge, check=check)

    p = sub.add_parser("run", help="run a YAML recipe (mergekit vocabulary)")
    p.add_argument("recipe", help="recipe file (.yaml)")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output file or folder (default: <recipe name>-merged in this folder)",
    )
    _add_output_options(p)
    _allow_code_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="write small real demo models and data to DIR")
    p.add_argument("dir", help="folder to create (or reuse)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_demo)


def _parse_sets(items: list[str], n_models: int, per_model: set[str]) -> tuple[dict, list[dict]]:
    """Split --set values into global parameters and per-model ones."""
    global_params: dict[str, Any] = {}
    model_params: list[dict[str, Any]] = [{} for _ in range(n_models)]
    for item in items:
        key, _, text = item.partition("=")  # the form KEY=VALUE is checked by argparse
        key = key.strip()
        if key in per_model and "," in text and not text.strip().startswith("["):
            values = [yaml.safe_load(v) for v in text.split(",")]
            if len(values) != n_models:
                raise RecipeError(
                    f"--set {key}= gives {len(values)} values for {n_models} "
                    "input model(s); give one value, or one per model"
                )
            for params, value in zip(model_params, values, strict=True):
                params[key] = value
        else:
            try:
                global_params[key] = yaml.safe_load(text)
            except yaml.YAMLError:
                raise RecipeError(f"--set {key}: cannot read the value '{text}'") from None
    return global_params, model_params


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    spec = REGISTRY.get(args.method)
    per_model = {p.name for p in spec.params if p.per_model}
    base_key = os.path.realpath(args.base) if args.base else None
    inputs = [m for m in args.models if os.path.realpath(m) != base_key]
    global_params, model_params = _parse_sets(args.set, len(inputs), per_model)
    models = []
    if args.base and not spec.needs.base_is_input:
        models.append(ModelEntry(args.base))
    models += [ModelEntry(m, p) for m, p in zip(inputs, model_params, strict=True)]
    return Recipe(
        merge_method=spec.name,
        models=tuple(models),
        base_model=args.base,
        parameters=global_params,
        dtype=args.dtype,
        out_dtype=args.out_dtype,
        seed=args.seed,
        data=args.data,
        arch=args.arch,
    )


def _execute(
    recipe: Recipe,
    out: str,
    args: argparse.Namespace,
    *,
    allow_code: bool,
    then: Callable[[], None] | None = None,
) -> int:
    """Merge and report; `then` runs after a merge that worked and before the report, so
    its error is the one thing said (with --json, the one document on stdout)."""
    if validate_recipe(recipe).needs.arch and not allow_code:
        recipe.refuse_code()  # naming the recipe file, not a model it would be run on
    bar = None if (args.quiet or args.json) else TerminalBar()
    progress = Progress(bar, log=None if args.json else _log)
    try:
        result = run_merge(
            recipe,
            out,
            progress=progress,
            shard_size=args.shard_size,
            overwrite=args.overwrite,
            extra_keys=args.extra_keys,
            device=args.device,
            allow_code=allow_code,
        )
    finally:
        if bar is not None:
            bar.close()
    if then is not None:
        then()
    _report(result, args)
    return 0


def _log(message: str) -> None:
    import sys

    print(f"note: {message}", file=sys.stderr)


def _report(result: MergeResult, args: argparse.Namespace) -> None:
    if args.json:
        print_json(result.to_json())
        return
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {result.out} in {result.seconds:.1f} s{_file_list(result)}")


def _file_list(result: MergeResult) -> str:
    """The files written, when the output is a folder (a single file names itself)."""
    if [Path(f) for f in result.files] == [Path(result.out)]:
        return ""
    names = [Path(f).name for f in result.files]
    shown = ", ".join(names[:4]) + (f", … ({len(names)} files)" if len(names) > 4 else "")
    return f": {shown}"


def cmd_merge(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    if args.save_recipe:
        check_recipe_target(args.save_recipe, args.output, overwrite=args.overwrite)

    def save_recipe() -> None:  # only for a merge that worked; absolute paths run anywhere
        save_recipe_beside(absolute_recipe(recipe), args.save_recipe, args.output)

    # --arch given on this command line is the user's own choice of code to run
    return _execute(
        recipe, args.output, args, allow_code=True, then=save_recipe if args.save_recipe else None
    )


def save_recipe_beside(recipe: Recipe, path: str, output: str) -> None:
    """Write the recipe (creating its folder, as the output's is), saying that the merged
    model was kept if the recipe alone cannot be written."""
    target = Path(path).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        recipe.save(target)
    except (OSError, OutputError) as exc:
        reason = exc.message if isinstance(exc, OutputError) else (exc.strerror or str(exc))
        raise OutputError(
            f"the recipe could not be written ({reason}); the merged model was written to "
            f"{output} and is kept",
            file=path,
            hint="the same recipe is in the output itself: its safetensors metadata, or "
            "merger_recipe.yaml in an output folder",
        ) from None


def check_recipe_target(path: str, output: str, *, overwrite: bool) -> None:
    """Where --save-recipe may write: a .yaml name (so never an input model), not the
    merge's output, and no existing file unless --overwrite allows replacing it."""
    target = Path(path).expanduser()
    if target.suffix.lower() not in (".yaml", ".yml"):
        raise OutputError(
            "a recipe is a YAML file",
            file=path,
            hint="name the recipe file *.yaml (--save-recipe recipe.yaml)",
        )
    if os.path.realpath(target) == os.path.realpath(Path(output).expanduser()):
        raise OutputError("the recipe file is the merge's output", file=path)
    if target.is_dir():
        raise OutputError("a folder has this name", file=path, hint="choose a file name")
    check_folder_writable(target)
    if os.path.lexists(target) and not overwrite:
        raise OutputError(
            "the recipe file already exists",
            file=path,
            hint="choose another name, or allow replacing it (--overwrite)",
        )


def cmd_run(args: argparse.Namespace) -> int:
    recipe = Recipe.load(args.recipe)
    out = args.output or f"{Path(args.recipe).stem}-merged"
    return _execute(recipe, out, args, allow_code=args.allow_code)


def cmd_demo(args: argparse.Namespace) -> int:
    from core.demo import make_demo

    demo = make_demo(args.dir, log=None if args.json else print)
    if args.json:
        print_json(demo.to_json())
    return 0
