"""Run a recipe: validate, check the models, stream the merge, write atomically.

This is the one entry point the CLI (`merger merge`, `merger run`) and the GUI's worker
call. Tensorwise methods stream tensor by tensor through `core.streaming`; model-level
methods receive a `ModelContext` and return a state dict. Either way the output goes
through `CheckpointWriter`, so a failed or cancelled merge leaves no file behind, and
the file's metadata holds the recipe, each source's sha256 and the app version.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core import __version__
from core.checkpoints import Checkpoint, CheckpointWriter, TensorInfo, open_checkpoint
from core.compat import CompatReport, ExtraKeys, compare
from core.errors import CheckpointError, IncompatibleModelsError, RecipeError
from core.jobs import Progress
from core.methods import REGISTRY
from core.methods.context import TensorContext
from core.methods.params import LayerIndex, check_value, resolve_params, unknown_keys
from core.methods.registry import MethodSpec
from core.recipe import ModelEntry, Recipe
from core.streaming import OutputTensor, run_streaming

TORCH_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


@dataclass
class MergeResult:
    out: Path
    files: list[Path]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "files": [str(f) for f in self.files],
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


@dataclass
class ModelContext:
    """Everything a model-level method gets: opened models, typed parameters, progress."""

    recipe: Recipe
    spec: MethodSpec
    base: Checkpoint | None
    inputs: list[Checkpoint]
    params: dict[str, Any]
    model_params: list[dict[str, Any]]
    progress: Progress
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    def load(self, ckpt: Checkpoint, dtype: torch.dtype | None = torch.float32) -> dict:
        """A whole state dict, floats cast to `dtype` (integer buffers kept as they are)."""
        state = {}
        for name in ckpt.keys():
            info = ckpt.info(name)
            want = dtype if (dtype is not None and info.dtype.is_floating_point) else None
            state[name] = ckpt.get(name, dtype=want)
            self.progress.check()
        return state


# -- validation -----------------------------------------------------------------------
def input_entries(recipe: Recipe, spec: MethodSpec) -> list[ModelEntry]:
    """The models a method combines: all of `models`, less the base where it is not an input."""
    if recipe.base_model and not spec.needs.base_is_input:
        base = _same_file_key(recipe.base_model)
        return [m for m in recipe.models if _same_file_key(m.model) != base]
    return list(recipe.models)


def validate_recipe(recipe: Recipe) -> MethodSpec:
    """Check method, roles and parameter values without touching any tensor."""
    spec = REGISTRY.get(recipe.merge_method)
    needs = spec.needs
    if needs.base and not recipe.base_model:
        raise RecipeError(
            f"method '{spec.name}' needs a base model",
            hint="set base_model (the model the others were fine-tuned from)",
        )
    inputs = input_entries(recipe, spec)
    if len(inputs) < needs.min_models:
        raise RecipeError(
            f"method '{spec.name}' needs at least {needs.min_models} input model(s) "
            f"besides the base, got {len(inputs)}"
        )
    if needs.max_models is not None and len(inputs) > needs.max_models:
        raise RecipeError(
            f"method '{spec.name}' takes at most {needs.max_models} input model(s) "
            f"besides the base, got {len(inputs)}"
        )
    if needs.data and not recipe.data:
        raise RecipeError(
            f"method '{spec.name}' needs data",
            hint="set data: digits, or a path to an .npz with arrays x and y",
        )
    bad = unknown_keys(spec, recipe.parameters)
    if bad:
        raise RecipeError(
            f"method '{spec.name}' has no parameter(s) {', '.join(bad)}",
            hint=f"it takes {', '.join(p.name for p in spec.params) or 'none'}",
        )
    for key, value in recipe.parameters.items():
        check_value(spec.param(key), value, where="parameters")
    for entry in recipe.models:
        bad = unknown_keys(spec, entry.parameters)
        if bad:
            raise RecipeError(
                f"{entry.model}: method '{spec.name}' has no parameter(s) {', '.join(bad)}"
            )
        for key, value in entry.parameters.items():
            p = spec.param(key)
            if not p.per_model:
                raise RecipeError(
                    f"{entry.model}: parameter '{key}' applies to the whole merge",
                    hint="move it to the top-level parameters",
                )
            check_value(p, value, where=entry.model)
    return spec


def _same_file_key(path: str) -> str:
    return str(Path(path).expanduser().resolve())


# -- compatibility --------------------------------------------------------------------
def check_models(
    paths: Sequence[str], base: str | None = None, *, extra_keys: ExtraKeys = "ignore"
) -> CompatReport:
    """Open each model's headers and compare them with the reference (base or first)."""
    opened: dict[str, Mapping[str, TensorInfo]] = {}
    failures: dict[str, str] = {}
    order = ([base] if base else []) + [p for p in paths if p != base]
    for path in order:
        try:
            with open_checkpoint(path) as ckpt:
                opened[path] = {i.name: i for i in ckpt.infos()}
        except CheckpointError as exc:
            failures[path] = exc.message
    usable = [p for p in order if p in opened]
    if not usable:
        report = CompatReport(reference=order[0] if order else "")
    else:
        report = compare(
            (usable[0], opened[usable[0]]),
            [(p, opened[p]) for p in usable[1:]],
            extra_keys=extra_keys,
        )
    for path, message in failures.items():
        report.problems.setdefault(path, []).append(message)
    return report


# -- running ----------------------------------------------------------------------------
class _Session:
    """Opened checkpoints for one merge, closed together."""

    def __init__(self, recipe: Recipe, spec: MethodSpec) -> None:
        self.spec = spec
        self.entries = input_entries(recipe, spec)
        self.paths: list[str] = []
        self.checkpoints: list[Checkpoint] = []
        self._index: dict[str, int] = {}
        try:
            self.base_index = self._open(recipe.base_model) if recipe.base_model else None
            self.input_indices = [self._open(m.model) for m in self.entries]
        except BaseException:
            self.close()
            raise

    def _open(self, path: str) -> int:
        key = _same_file_key(path)
        if key not in self._index:
            self._index[key] = len(self.checkpoints)
            self.checkpoints.append(open_checkpoint(path))
            self.paths.append(path)
        return self._index[key]

    @property
    def reference(self) -> Checkpoint:
        idx = self.base_index if self.base_index is not None else self.input_indices[0]
        return self.checkpoints[idx]

    def close(self) -> None:
        for ckpt in self.checkpoints:
            ckpt.close()


def _out_dtype(recipe: Recipe, info: TensorInfo) -> torch.dtype:
    if not info.dtype.is_floating_point:
        return info.dtype
    name = recipe.out_dtype or recipe.dtype
    return TORCH_DTYPES[name] if name else info.dtype


def _check_finite(tensor: torch.Tensor, name: str, path: str) -> None:
    """Refuse NaN/Inf inputs; a finite sum proves every element finite, cheaply."""
    if not tensor.dtype.is_floating_point or math.isfinite(float(tensor.sum())):
        return
    if not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(
            "holds NaN or infinite values",
            file=path,
            tensor=name,
            hint="this model is broken; merging it would spread the damage",
        )


def absolute_recipe(recipe: Recipe) -> Recipe:
    """The recipe with absolute model, data and architecture paths, so that the copy
    stored beside a merged model runs from any working folder."""

    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else path

    models = tuple(ModelEntry(absolute(m.model), m.parameters) for m in recipe.models)
    data = recipe.data if recipe.data in (None, "digits") else absolute(recipe.data)
    arch = recipe.arch
    if arch and ".py:" in arch:
        file, _, factory = arch.rpartition(":")
        arch = f"{absolute(file)}:{factory}"
    return recipe.with_(models=models, base_model=absolute(recipe.base_model), data=data, arch=arch)


def _metadata(recipe: Recipe, session: _Session, hashes: Mapping[str, str]) -> dict[str, str]:
    sources = [{"path": p, "sha256": hashes.get(p, "")} for p in session.paths]
    return {
        "format": "pt",
        "merger_version": __version__,
        "merger_recipe": absolute_recipe(recipe).to_yaml(),
        "merger_sources": json.dumps(sources),
    }


def _extra_files(recipe: Recipe, session: _Session, out: str | Path) -> dict[str, bytes] | None:
    """Files written beside the weights when the output is a folder (HF layout)."""
    if str(out).endswith(".safetensors"):
        return None
    files = {"merger_recipe.yaml": absolute_recipe(recipe).to_yaml().encode()}
    config = session.reference.config
    if config is not None:
        files["config.json"] = json.dumps(config, indent=2).encode()
    return files


def _hash_sources(session: _Session, hashes: dict[str, str]) -> threading.Thread:
    """Hash the inputs in the background; the writer takes the digests before commit."""

    def work() -> None:
        for path, ckpt in zip(session.paths, session.checkpoints, strict=True):
            try:
                hashes[path] = ckpt.sha256()
            except (OSError, CheckpointError):
                hashes[path] = ""

    thread = threading.Thread(target=work, name="merger-hash", daemon=True)
    thread.start()
    return thread


def run_merge(
    recipe: Recipe,
    out: str | Path,
    *,
    progress: Progress | None = None,
    shard_size: int | None = None,
    overwrite: bool = False,
    extra_keys: ExtraKeys = "ignore",
    device: str = "cpu",
) -> MergeResult:
    """Merge as `recipe` says and write the result to `out` (file or folder)."""
    progress = progress or Progress()
    start = time.monotonic()
    spec = validate_recipe(recipe)
    session = _Session(recipe, spec)
    try:
        report = compare(
            (session.paths[_ref_index(session)], _infos(session.reference)),
            [(p, _infos(c)) for p, c in zip(session.paths, session.checkpoints, strict=True)],
            extra_keys=extra_keys,
        )
        if not report.ok:
            path, reason = report.first_problem()  # type: ignore[misc]
            raise IncompatibleModelsError(
                reason, file=path, hint="these models do not share one architecture"
            )
        for note in report.notes:
            progress.log(note)
        hashes: dict[str, str] = {}
        hasher = _hash_sources(session, hashes)
        if spec.kind == "tensorwise":
            files = _run_tensorwise(
                recipe, spec, session, out, progress, shard_size, overwrite, hashes, hasher
            )
        else:
            files = _run_model_level(
                recipe, spec, session, out, progress, shard_size, overwrite, hashes, hasher, device
            )
    finally:
        session.close()
    return MergeResult(Path(out), files, time.monotonic() - start, report.notes)


def _ref_index(session: _Session) -> int:
    return session.base_index if session.base_index is not None else session.input_indices[0]


def _infos(ckpt: Checkpoint) -> dict[str, TensorInfo]:
    return {i.name: i for i in ckpt.infos()}


def _run_tensorwise(recipe, spec, session, out, progress, shard_size, overwrite, hashes, hasher):
    ref = session.reference
    ref_idx = _ref_index(session)
    names = ref.keys()
    layers = LayerIndex(names)
    compute_dtype = TORCH_DTYPES[recipe.dtype] if recipe.dtype else torch.float32
    n_inputs = len(session.input_indices)
    base_slot = n_inputs if session.base_index is not None else None
    outputs, plan = [], []
    for name in names:
        info = ref.info(name)
        dtype = _out_dtype(recipe, info)
        if info.dtype.is_floating_point:
            sources = tuple(session.input_indices) + (
                (session.base_index,) if session.base_index is not None else ()
            )
        else:  # integer buffers (step counters, masks) come from the base / reference
            sources = (ref_idx,)
        outputs.append(OutputTensor(name, info.shape, dtype, sources))
        plan.append(TensorInfo.of(name, info.shape, dtype))
    model_raw = [e.parameters for e in session.entries]

    def compute(output: OutputTensor, tensors: list[torch.Tensor | None]) -> torch.Tensor:
        for tensor, src in zip(tensors, output.sources, strict=True):
            _check_finite(tensor, output.name, session.paths[src])
        if len(output.sources) == 1 and not tensors[0].dtype.is_floating_point:
            return tensors[0]
        tensors = _unalias(tensors)
        t = layers.t(output.name)
        params = resolve_params(spec, recipe.parameters, output.name, t, per_model=False)
        model_params = [
            resolve_params(spec, raw, output.name, t, per_model=True, fallback=recipe.parameters)
            for raw in model_raw
        ]
        base = tensors[base_slot] if base_slot is not None else None
        ctx = TensorContext(output.name, recipe.seed)
        return spec.fn(list(tensors[:n_inputs]), base, params, model_params, ctx)

    with CheckpointWriter(
        out,
        plan,
        metadata=_metadata(recipe, session, {}),
        shard_size=shard_size,
        protect=session.paths,
        overwrite=overwrite,
        extra_files=_extra_files(recipe, session, out),
    ) as writer:
        run_streaming(
            session.checkpoints, outputs, compute, writer, progress, compute_dtype=compute_dtype
        )
        hasher.join()
        progress.check()
        writer.set_metadata("merger_sources", _metadata(recipe, session, hashes)["merger_sources"])
        return writer.commit()


def _unalias(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Copy tensors that appear twice (a model listed twice) so in-place math stays right."""
    seen: set[int] = set()
    out = []
    for t in tensors:
        if t is not None and id(t) in seen:
            t = t.clone()
        elif t is not None:
            seen.add(id(t))
        out.append(t)
    return out


def _run_model_level(
    recipe, spec, session, out, progress, shard_size, overwrite, hashes, hasher, device
):
    for key, value in recipe.parameters.items():
        if isinstance(value, list):
            raise RecipeError(f"method '{spec.name}' takes one value for '{key}', not a list")
    params = resolve_params(spec, recipe.parameters, "", 0.0, per_model=False)
    model_params = [
        resolve_params(spec, e.parameters, "", 0.0, per_model=True, fallback=recipe.parameters)
        for e in session.entries
    ]
    base = session.checkpoints[session.base_index] if session.base_index is not None else None
    ctx = ModelContext(
        recipe,
        spec,
        base,
        [session.checkpoints[i] for i in session.input_indices],
        params,
        model_params,
        progress,
        device,
    )
    state = spec.fn(ctx)
    ref = session.reference
    plan = [
        TensorInfo.of(n, tuple(t.shape), _out_dtype(recipe, TensorInfo.of(n, t.shape, t.dtype)))
        for n, t in state.items()
    ]
    del ref
    with CheckpointWriter(
        out,
        plan,
        metadata=_metadata(recipe, session, {}),
        shard_size=shard_size,
        protect=session.paths,
        overwrite=overwrite,
        extra_files=_extra_files(recipe, session, out),
    ) as writer:
        for i, info in enumerate(plan):
            progress.update(i, len(plan), f"writing {info.name}")
            writer.write(info.name, state[info.name].to(info.dtype).contiguous())
        hasher.join()
        writer.set_metadata("merger_sources", _metadata(recipe, session, hashes)["merger_sources"])
        return writer.commit()


def export_checkpoint(
    src: str | Path,
    out: str | Path,
    *,
    dtype: str | None = None,
    shard_size: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> list[Path]:
    """Copy a checkpoint to another path/format/dtype, streaming, keeping its metadata."""
    progress = progress or Progress()
    with open_checkpoint(src) as ckpt:
        target = TORCH_DTYPES[dtype] if dtype else None
        outputs, plan = [], []
        for info in ckpt.infos():
            out_dtype = (
                target if (target is not None and info.dtype.is_floating_point) else info.dtype
            )
            outputs.append(OutputTensor(info.name, info.shape, out_dtype, (0,)))
            plan.append(TensorInfo.of(info.name, info.shape, out_dtype))
        extra: dict[str, bytes] | None = {}
        if ckpt.config is not None:
            extra["config.json"] = json.dumps(ckpt.config, indent=2).encode()
        if "merger_recipe" in ckpt.metadata:
            extra["merger_recipe.yaml"] = ckpt.metadata["merger_recipe"].encode()
        if str(out).endswith(".safetensors"):
            extra = None
        with CheckpointWriter(
            out,
            plan,
            metadata=dict(ckpt.metadata),
            shard_size=shard_size,
            protect=[str(src)],
            overwrite=overwrite,
            extra_files=extra,
        ) as writer:
            # float64 sources would lose digits through a float32 pass; others are exact in it
            wide = any(i.dtype == torch.float64 for i in ckpt.infos())
            run_streaming(
                [ckpt],
                outputs,
                lambda o, ts: ts[0],
                writer,
                progress,
                compute_dtype=torch.float64 if wide else torch.float32,
            )
            return writer.commit()
