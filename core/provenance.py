"""Where a merged model came from: the recipe (with absolute paths), each source's
sha256 and the app version, stored in the safetensors header and beside folder outputs."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path

from core import __version__
from core.errors import CheckpointError
from core.recipe import ModelEntry, Recipe


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


def metadata(recipe: Recipe, session, hashes: Mapping[str, str]) -> dict[str, str]:
    sources = [
        {"path": str(Path(p).expanduser().resolve()), "sha256": hashes.get(p, "")}
        for p in session.paths
    ]  # absolute, like the stored recipe's paths: the file may be read from anywhere
    return {
        "format": "pt",
        "merger_version": __version__,
        "merger_recipe": absolute_recipe(recipe).to_yaml(),
        "merger_sources": json.dumps(sources),
    }


def extra_files(recipe: Recipe, session, out: str | Path) -> dict[str, bytes] | None:
    """Files written beside the weights when the output is a folder (HF layout)."""
    if str(out).endswith(".safetensors"):
        return None
    files = {"merger_recipe.yaml": absolute_recipe(recipe).to_yaml().encode()}
    config = output_config(session)
    if config is not None:
        files["config.json"] = config_json(config, recipe.out_dtype or recipe.dtype)
    return files


def output_config(session) -> Mapping | None:
    """The config.json an output folder gets: the reference's (base, or first model), or
    else the first model's that has one (a bare weights file listed first has none)."""
    if session.reference.config is not None:
        return session.reference.config
    return next((c.config for c in session.checkpoints if c.config is not None), None)


def config_notes(session) -> list[str]:
    """Where the output's config.json comes from when that is not obvious: not from the
    reference, or models whose configs name different architectures (model_type)."""
    configs = [
        (path, c.config)
        for path, c in zip(session.paths, session.checkpoints, strict=True)
        if c.config is not None
    ]
    if not configs:
        return []
    notes = []
    if session.reference.config is None:
        notes.append(
            f"the reference model has no config.json: a folder output takes {configs[0][0]}'s"
        )
    types = {str(c.get("model_type")) for _, c in configs if c.get("model_type")}
    if len(types) > 1:
        notes.append(
            f"the models' config.json name different model types ({', '.join(sorted(types))}): "
            "a folder output takes the reference's; check they are one architecture"
        )
    return notes


def config_json(config: Mapping, dtype: str | None) -> bytes:
    """A Hugging Face config.json for the output: the input's, with `torch_dtype` saying
    the dtype written (loaders read it to pick the dtype they load in)."""
    if dtype is not None and "torch_dtype" in config:
        config = {**config, "torch_dtype": dtype}
    return json.dumps(config, indent=2).encode()


def hash_sources(session, hashes: dict[str, str]) -> threading.Thread:
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
