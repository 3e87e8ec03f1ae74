"""Copy a checkpoint to another path, layout or dtype, streaming, keeping its metadata.

The GUI merges into a session folder first; Save exports that result to where the user
wants it, in the format, dtype and shard size they pick.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from core.checkpoints import CheckpointWriter, TensorInfo, open_checkpoint
from core.errors import RecipeError
from core.jobs import Progress
from core.provenance import config_json
from core.recipe import TORCH_DTYPES, Recipe
from core.streaming import OutputTensor, run_streaming


def export_checkpoint(
    src: str | Path,
    out: str | Path,
    *,
    dtype: str | None = None,
    shard_size: int | None = None,
    overwrite: bool = False,
    protect: Sequence[str | Path] = (),
    progress: Progress | None = None,
) -> list[Path]:
    """Copy a checkpoint to another path/format/dtype, streaming, keeping its metadata.

    Never writes over `src`, the paths in `protect`, or the input models named by the
    recipe stored in `src` (a merged model exported next to its inputs must not replace
    one of them, even when the user allows overwriting)."""
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
        metadata = dict(ckpt.metadata)
        if dtype and "merger_recipe" in metadata:
            # the stored recipe must reproduce this file, in this dtype
            recipe = Recipe.from_yaml(metadata["merger_recipe"]).with_(out_dtype=dtype)
            metadata["merger_recipe"] = recipe.to_yaml()
        extra: dict[str, bytes] | None = {}
        if ckpt.config is not None:
            extra["config.json"] = config_json(ckpt.config, dtype)
        if "merger_recipe" in metadata:
            extra["merger_recipe.yaml"] = metadata["merger_recipe"].encode()
        if str(out).endswith(".safetensors"):
            extra = None
        with CheckpointWriter(
            out,
            plan,
            metadata=metadata,
            shard_size=shard_size,
            protect=[str(src), *protect, *_recipe_inputs(metadata)],
            overwrite=overwrite,
            extra_files=extra,
        ) as writer:
            # float64 sources would lose digits through a float32 pass; others are exact in it
            wide = any(i.dtype == torch.float64 for i in ckpt.infos())
            run_streaming(
                [ckpt],
                outputs,
                lambda o, ts, tick: ts[0],
                writer,
                progress,
                compute_dtype=torch.float64 if wide else torch.float32,
            )
            return writer.commit()


def _recipe_inputs(metadata: dict[str, str]) -> list[str]:
    """The model paths named by a stored recipe (none if there is none or it is unreadable:
    the recipe is only a record here, and the caller's `protect` still applies)."""
    text = metadata.get("merger_recipe")
    if not text:
        return []
    try:
        return Recipe.from_yaml(text).model_paths()
    except RecipeError:  # a damaged record must not stop the export
        return []
