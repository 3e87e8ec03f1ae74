"""Run a recipe: validate, check the models, stream the merge, write atomically.

This is the one entry point the CLI (`merger merge`, `merger run`) and the GUI's worker
call. Tensorwise methods stream tensor by tensor through `core.streaming`; model-level
methods receive a `ModelContext` and return a state dict. Either way the output goes
through `CheckpointWriter`, so a failed or cancelled merge leaves no file behind, and
the file's metadata holds the recipe, each source's sha256 and the app version.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.checkpoints import Checkpoint, CheckpointWriter, TensorInfo, open_checkpoint
from core.checkpoints.output_paths import check_output_early, check_output_name
from core.compat import ExtraKeys, compare
from core.devices import check_device_name, resolve_device
from core.errors import IncompatibleModelsError, RecipeError
from core.export import export_checkpoint
from core.jobs import Progress
from core.methods.context import TensorContext
from core.methods.params import LayerIndex, resolve_params
from core.methods.registry import MethodSpec
from core.prepass import prepare_method
from core.provenance import config_notes, extra_files, hash_sources, metadata
from core.recipe import TORCH_DTYPES, Recipe
from core.resources import check_merge_memory, run_on_device
from core.streaming import OutputTensor, check_cast_range, run_streaming
from core.validate import (
    check_finite,
    check_models,
    gradients_without_layers,
    input_entries,
    same_file_key,
    sign_notes,
    unused_filters,
    unused_settings,
    validate_recipe,
)


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
    # May an architecture given as `file.py:factory` be imported (runs that file's code)?
    # Only when the user named it themselves, never for a recipe from elsewhere.
    allow_code: bool = False

    def load(self, ckpt: Checkpoint, dtype: torch.dtype | None = torch.float32) -> dict:
        """A whole state dict, floats cast to `dtype` (integer buffers kept as they are)."""
        state = {}
        for name in ckpt.keys():
            info = ckpt.info(name)
            want = dtype if (dtype is not None and info.dtype.is_floating_point) else None
            state[name] = ckpt.get(name, dtype=want)
            check_finite(state[name], name, str(ckpt.path))
            self.progress.check()
        return state


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
        key = same_file_key(path)
        if key not in self._index:
            self._index[key] = len(self.checkpoints)
            self.checkpoints.append(open_checkpoint(path))
            self.paths.append(path)
        return self._index[key]

    @property
    def reference(self) -> Checkpoint:
        return self.checkpoints[_ref_index(self)]

    def close(self) -> None:
        for ckpt in self.checkpoints:
            ckpt.close()


def _out_dtype(recipe: Recipe, info: TensorInfo) -> torch.dtype:
    if not info.dtype.is_floating_point:
        return info.dtype
    name = recipe.out_dtype or recipe.dtype
    return TORCH_DTYPES[name] if name else info.dtype


def _compute_dtype(recipe: Recipe, stored: list[torch.dtype], out: torch.dtype) -> torch.dtype:
    """The recipe's `dtype` if set; else float64 when an input or the output is float64
    (a float32 pass would lose its digits), else float32."""
    if recipe.dtype:
        return TORCH_DTYPES[recipe.dtype]
    return torch.float64 if torch.float64 in (*stored, out) else torch.float32


def _widest_compute_dtype(recipe: Recipe, session: _Session) -> torch.dtype:
    """The compute dtype of the widest tensor, for the memory estimate."""
    return _compute_dtype(
        recipe,
        [i.dtype for c in session.checkpoints for i in c.infos()],
        TORCH_DTYPES[recipe.out_dtype] if recipe.out_dtype else torch.float32,
    )


def _check_slice_layers(recipe: Recipe, session: _Session) -> None:
    """A `slices` recipe is a whole-model merge only if its range covers every layer."""
    if recipe.slice_layers is None:
        return
    blocks = LayerIndex(session.reference.keys()).blocks
    if blocks != recipe.slice_layers:
        raise RecipeError(
            f"the recipe's slices take layer_range [0, {recipe.slice_layers}], but the "
            f"models have {blocks} numbered layers: only slices of whole models are "
            "supported (frankenmerges are not)",
            hint=f"set layer_range: [0, {blocks}], or list the models under 'models'",
        )


def _dtype_notes(recipe: Recipe, session: _Session) -> list[str]:
    """A note when the models' float dtypes differ and the recipe names none for the
    output: each tensor is then written in the reference's dtype (base, or first model),
    which depends on the models' order."""
    if recipe.out_dtype or recipe.dtype:
        return []
    kinds = {
        path: sorted(
            {str(i.dtype).removeprefix("torch.") for i in c.infos() if i.dtype.is_floating_point}
        )
        for path, c in zip(session.paths, session.checkpoints, strict=True)
    }
    if len({tuple(k) for k in kinds.values()}) <= 1:
        return []
    ref = session.paths[_ref_index(session)]
    listed = "; ".join(f"{Path(p).name}: {', '.join(k)}" for p, k in kinds.items())
    return [
        f"the models' dtypes differ ({listed}): the output takes {Path(ref).name}'s, the "
        "reference; set out_dtype (--out-dtype, or Output dtype in the window) to choose"
    ]


def _reading_notes(session: _Session) -> list[str]:
    """What the readers chose (which of a .pt's weight sets was read), per input."""
    pairs = zip(session.paths, session.checkpoints, strict=True)
    return [f"{path}: {note}" for path, ckpt in pairs for note in ckpt.notes]


def run_merge(
    recipe: Recipe,
    out: str | Path,
    *,
    progress: Progress | None = None,
    shard_size: int | None = None,
    overwrite: bool = False,
    extra_keys: ExtraKeys = "ignore",
    device: str = "cpu",
    allow_code: bool = False,
) -> MergeResult:
    """Merge as `recipe` says and write the result to `out` (file or folder).

    `allow_code` lets a model-level method import the architecture file a recipe names
    (`arch: model.py:factory`); it stays off for recipes the user did not write.
    """
    progress = progress or Progress()
    start = time.monotonic()
    spec = validate_recipe(recipe)
    check_output_name(out)  # before any work: `-o merged.pt` is refused at once
    device = check_device_name(device)
    session = _Session(recipe, spec)
    try:
        check_output_early(out, session.paths, overwrite=overwrite)
        report = compare(
            (session.paths[_ref_index(session)], _infos(session.reference)),
            [(p, _infos(c)) for p, c in zip(session.paths, session.checkpoints, strict=True)],
            extra_keys=extra_keys,
        )
        if not report.ok:
            path, reason = report.first_problem()  # type: ignore[misc]
            raise IncompatibleModelsError(
                reason, file=path, hint="`merger info` lists each model's tensors"
            )
        _check_slice_layers(recipe, session)
        report.notes.extend(unused_filters(recipe, session.reference.keys()))
        merged = [i.name for i in session.reference.infos() if i.dtype.is_floating_point]
        report.notes.extend(gradients_without_layers(recipe, merged))
        report.notes.extend(sign_notes(recipe, spec))
        report.notes.extend(unused_settings(recipe, spec))
        report.notes.extend(_dtype_notes(recipe, session))
        if not str(out).endswith(".safetensors"):
            report.notes.extend(config_notes(session))
        if spec.kind == "tensorwise":  # float64 tensors are computed in float64
            compute_dtype = _widest_compute_dtype(recipe, session)
        else:
            compute_dtype = TORCH_DTYPES[recipe.dtype] if recipe.dtype else torch.float32
        # refuse up front, with the numbers, what cannot fit (streaming is already minimal)
        check_merge_memory(
            [c.infos() for c in session.checkpoints], spec.kind, compute_dtype=compute_dtype
        )
        hashes: dict[str, str] = {}
        hasher = hash_sources(session, hashes)
        target = _Target(out, shard_size, overwrite)
        notes = list(report.notes)
        notes += _reading_notes(session)
        if spec.kind == "tensorwise":
            if device.startswith("cuda"):  # streaming reads, adds and writes: CPU-bound
                notes.append(
                    f"{spec.label} streams tensor by tensor on the CPU; the CUDA device "
                    "serves the alignment methods"
                )
            files = _run_tensorwise(recipe, spec, session, target, progress, hashes, hasher)
        else:
            files = _run_model_level(
                recipe, spec, session, target, progress, hashes, hasher, device, notes, allow_code
            )
    finally:
        session.close()
    return MergeResult(Path(out), files, time.monotonic() - start, notes)


def _ref_index(session: _Session) -> int:
    return session.base_index if session.base_index is not None else session.input_indices[0]


def _infos(ckpt: Checkpoint) -> dict[str, TensorInfo]:
    return {i.name: i for i in ckpt.infos()}


@dataclass(frozen=True)
class _Target:
    """Where and how the result is written."""

    out: str | Path
    shard_size: int | None
    overwrite: bool


def _writer(recipe: Recipe, session: _Session, plan: list[TensorInfo], target: _Target):
    return CheckpointWriter(
        target.out,
        plan,
        metadata=metadata(recipe, session, {}),
        shard_size=target.shard_size,
        protect=session.paths,
        overwrite=target.overwrite,
        extra_files=extra_files(recipe, session, target.out),
    )


def _commit(writer, recipe: Recipe, session: _Session, hashes, hasher, progress) -> list[Path]:
    """Wait for the source hashes, record them in the header, publish the file."""
    hasher.join()
    progress.check()
    writer.set_metadata("merger_sources", metadata(recipe, session, hashes)["merger_sources"])
    return writer.commit()


def _run_tensorwise(recipe, spec, session, target, progress, hashes, hasher):
    ref = session.reference
    ref_idx = _ref_index(session)
    names = ref.keys()
    layers = LayerIndex(names)
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
        stored = [session.checkpoints[s].info(name).dtype for s in sources]
        outputs.append(
            OutputTensor(name, info.shape, dtype, sources, _compute_dtype(recipe, stored, dtype))
        )
        plan.append(TensorInfo.of(name, info.shape, dtype))
    model_raw = [e.parameters for e in session.entries]
    extra, merge_progress = prepare_method(
        spec,
        recipe,
        session.checkpoints[session.base_index] if session.base_index is not None else None,
        [session.checkpoints[i] for i in session.input_indices],
        session.entries,
        progress,
    )

    def compute(
        output: OutputTensor, tensors: list[torch.Tensor | None], tick: Callable[[float], None]
    ) -> torch.Tensor:
        for tensor, src in zip(tensors, output.sources, strict=True):
            check_finite(tensor, output.name, session.paths[src])
        if len(output.sources) == 1 and not tensors[0].dtype.is_floating_point:
            return tensors[0]
        tensors = _unalias(tensors)
        t = layers.t(output.name)
        params = resolve_params(spec, recipe.parameters, output.name, t, per_model=False)
        model_params = [
            resolve_params(spec, raw, output.name, t, per_model=True, fallback=recipe.parameters)
            for raw in model_raw
        ]
        if extra:
            for mp, more in zip(model_params, extra, strict=True):
                mp.update(more)
        base = tensors[base_slot] if base_slot is not None else None
        ctx = TensorContext(output.name, recipe.seed, tick=tick)
        return spec.fn(list(tensors[:n_inputs]), base, params, model_params, ctx)

    with _writer(recipe, session, plan, target) as writer:
        run_streaming(session.checkpoints, outputs, compute, writer, merge_progress)
        return _commit(writer, recipe, session, hashes, hasher, progress)


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


# The bar's share for writing a model-level method's result: a copy to disk, seconds at
# most, beside an alignment's minutes (the method reports the rest).
_WRITE_SHARE = 0.05


def _run_model_level(
    recipe, spec, session, target, progress, hashes, hasher, device, notes, allow_code
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
        allow_code=allow_code,
    )
    device = resolve_device(device)
    # the method fills the bar up to the writing share, then writing fills the rest: the
    # bar must not fall back to 0 at the last step (it read 96% → 50%, "3:41 left")
    ctx = dataclasses.replace(ctx, progress=progress.within(0.0, 1.0 - _WRITE_SHARE))
    state = run_on_device(lambda d: spec.fn(dataclasses.replace(ctx, device=d)), device, progress)
    writing = progress.within(1.0 - _WRITE_SHARE, 1.0)
    notes.extend(ctx.notes)
    ref = session.reference
    plan = [  # output dtypes follow the inputs' own (not the float32 the method computed in)
        TensorInfo.of(
            n,
            tuple(t.shape),
            _out_dtype(recipe, ref.info(n) if n in ref else TensorInfo.of(n, t.shape, t.dtype)),
        )
        for n, t in state.items()
    ]
    with _writer(recipe, session, plan, target) as writer:
        for i, info in enumerate(plan):
            writing.update(i, len(plan), f"writing {info.name}")
            cast = state[info.name].to(info.dtype).contiguous()
            check_cast_range(state[info.name], cast, info.name)
            writer.write(info.name, cast)
        writing.update(len(plan), len(plan), "publishing the result")
        return _commit(writer, recipe, session, hashes, hasher, progress)


__all__ = [
    "MergeResult",
    "ModelContext",
    "check_models",
    "export_checkpoint",
    "run_merge",
    "validate_recipe",
]
