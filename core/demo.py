"""Real small models to merge at once: MLPs trained on scikit-learn's digits, in seconds.

`make_demo(folder)` writes:

* `base.safetensors` — an MLP 64-64-64-10 trained on all ten digits (the common ancestor);
* `finetuned_0-4`, `finetuned_5-9`, `finetuned_even` — the base fine-tuned on a subset of
  the digits each, the classic setting for task arithmetic, TIES and DARE;
* `seed_a`, `seed_b` — two wider MLPs trained from different random inits, the setting
  for permutation alignment (Git Re-Basin) and linear mode connectivity;
* `digits_test.npz` (arrays `x`, `y`): held-out digits to evaluate on;
* `recipes/*.yaml` — ready-to-run recipes (`merger run recipes/task_arithmetic.yaml`).

Everything is seeded, so the files are the same on every machine with the same torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.atomic import write_bytes_atomic, write_text_atomic
from core.checkpoints import save_state_dict
from core.checkpoints.output_paths import output_error
from core.data import Dataset, split_digits
from core.errors import OutputError
from core.jobs import Progress

DEMO_VERSION = "2"
_RECIPES = {
    "task_arithmetic.yaml": """\
# Add what each fine-tune learned to the base model.
merge_method: task_arithmetic
base_model: ../base.safetensors
models:
  - model: ../base.safetensors
  - model: ../finetuned_0-4.safetensors
    parameters: {weight: 1.0}
  - model: ../finetuned_5-9.safetensors
    parameters: {weight: 1.0}
parameters:
  lambda: 0.7
""",
    "ties.yaml": """\
# TIES: keep each task vector's largest 30 %, elect signs, average what agrees.
merge_method: ties
base_model: ../base.safetensors
models:
  - model: ../base.safetensors
  - model: ../finetuned_0-4.safetensors
    parameters: {weight: 1.0, density: 0.3}
  - model: ../finetuned_5-9.safetensors
    parameters: {weight: 1.0, density: 0.3}
  - model: ../finetuned_even.safetensors
    parameters: {weight: 1.0, density: 0.3}
parameters:
  normalize: true
  lambda: 1.0
""",
    "linear.yaml": """\
# A model soup: the plain average of the three fine-tunes.
merge_method: linear
models:
  - model: ../finetuned_0-4.safetensors
  - model: ../finetuned_5-9.safetensors
  - model: ../finetuned_even.safetensors
""",
    "weight_matching.yaml": """\
# Git Re-Basin: permute seed_b's hidden units to match seed_a, then average the two.
merge_method: weight_matching
models:
  - model: ../seed_a.safetensors
  - model: ../seed_b.safetensors
parameters:
  lambda: 0.5
""",
    "slerp.yaml": """\
# Along the great circle between two fine-tunes: t grows from 0.2 (first layer) to 0.8 (last).
merge_method: slerp
base_model: ../finetuned_0-4.safetensors
models:
  - model: ../finetuned_0-4.safetensors
  - model: ../finetuned_5-9.safetensors
parameters:
  t: [0.2, 0.5, 0.8]
""",
}


@dataclass
class DemoSet:
    folder: Path
    base: Path
    models: dict[str, Path]
    seeds: tuple[Path, Path]
    data: Path
    recipes: dict[str, Path] = field(default_factory=dict)

    @property
    def recipe(self) -> Path:
        return self.recipes["task_arithmetic"]

    def to_json(self) -> dict:
        return {
            "folder": str(self.folder),
            "base": str(self.base),
            "models": {k: str(v) for k, v in self.models.items()},
            "seeds": [str(s) for s in self.seeds],
            "data": str(self.data),
            "recipes": {k: str(v) for k, v in self.recipes.items()},
        }


def mlp(hidden: int, depth: int = 2, inputs: int = 64, classes: int = 10) -> nn.Module:
    """Linear-ReLU stack under `layers.` (keys layers.0, layers.2, ...)."""
    mods: list[nn.Module] = []
    width = inputs
    for _ in range(depth):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, classes))
    model = nn.Module()
    model.layers = nn.Sequential(*mods)
    model.forward = model.layers.forward  # type: ignore[method-assign]
    return model


def train(
    model: nn.Module,
    data: Dataset,
    *,
    steps: int,
    lr: float,
    seed: int,
    check: Callable[[], None] | None = None,
) -> nn.Module:
    """Full-batch Adam with a little input noise: seconds on a CPU, ~95 % test accuracy.
    `check` runs before each step (a cancellation point)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(steps):
        if check is not None:
            check()
        noise = torch.randn(data.x.shape, generator=gen) * 0.05
        opt.zero_grad()
        loss_fn(model(data.x + noise), data.y).backward()
        opt.step()
    model.eval()
    return model


def accuracy(model: nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        return float((model(data.x).argmax(1) == data.y).float().mean())


def _subset(data: Dataset, digits: list[int], name: str) -> Dataset:
    keep = torch.isin(data.y, torch.tensor(digits))
    return data.subset(torch.nonzero(keep).flatten(), name)


def make_demo(
    folder: str | Path,
    *,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> DemoSet:
    """Write (or reuse) the demo models, data and recipes in `folder`.

    `progress` counts the seven steps (six trainings, then data and recipes) and cancels
    within a training step; a cancelled demo's files are rewritten by the next call."""
    say = log or (lambda _msg: None)
    step = progress or Progress()
    folder = Path(folder).expanduser()
    _make_folder(folder)
    _make_folder(folder / "recipes")
    demo = DemoSet(
        folder=folder,
        base=folder / "base.safetensors",
        models={k: folder / f"finetuned_{k}.safetensors" for k in ("0-4", "5-9", "even")},
        seeds=(folder / "seed_a.safetensors", folder / "seed_b.safetensors"),
        data=folder / "digits_test.npz",
        recipes={Path(k).stem: folder / "recipes" / k for k in _RECIPES},
    )
    marker = folder / "demo.json"
    if _demo_version(marker) == DEMO_VERSION:
        say(f"demo models already in {folder}")
        return demo
    _refuse_foreign_files(demo, marker)
    # from here on the files are ours, even if this run is cancelled half-way
    write_text_atomic(marker, json.dumps({"version": "incomplete"}))
    torch.manual_seed(0)
    train_set, test_set = split_digits(seed=0)
    total = 7
    step.update(0, total, "training the base model")
    base = train(
        _seeded(lambda: mlp(64), 0), train_set, steps=150, lr=1e-2, seed=0, check=step.check
    )
    _save(base, demo.base, "base: MLP 64-64-64-10 on all digits", test_set, say)
    subsets = {"0-4": [0, 1, 2, 3, 4], "5-9": [5, 6, 7, 8, 9], "even": [0, 2, 4, 6, 8]}
    for k, (key, digits) in enumerate(subsets.items(), start=1):
        step.update(k, total, f"fine-tuning on digits {key}")
        tuned = _seeded(lambda: mlp(64), 0)
        tuned.load_state_dict(base.state_dict())
        train(tuned, _subset(train_set, digits, key), steps=60, lr=3e-3, seed=1, check=step.check)
        _save(tuned, demo.models[key], f"fine-tuned on digits {key}", test_set, say)
    for i, path in enumerate(demo.seeds):
        step.update(4 + i, total, f"training independent model {i + 1} of 2")
        model = train(
            _seeded(lambda: mlp(128), 100 + i),
            train_set,
            steps=200,
            lr=1e-2,
            seed=100 + i,
            check=step.check,
        )
        _save(model, path, f"independent MLP 64-128-128-10, seed {100 + i}", test_set, say)
    step.update(6, total, "writing data and recipes")
    buf = _npz_bytes(test_set)
    write_bytes_atomic(demo.data, buf)
    say(f"wrote {demo.data.name}: {len(test_set)} held-out digits (arrays x, y)")
    for name, text in _RECIPES.items():
        write_text_atomic(folder / "recipes" / name, text)
    say(f"wrote recipes: {', '.join(_RECIPES)} in {folder / 'recipes'}")
    write_text_atomic(marker, json.dumps({"version": DEMO_VERSION, **demo.to_json()}, indent=2))
    return demo


def _refuse_foreign_files(demo: DemoSet, marker: Path) -> None:
    """Files of ours may be rewritten (an older demo, named by its demo.json); files with
    the demo's names in a folder without one are someone's own, and are left alone."""
    if marker.exists():
        return
    targets = [demo.base, *demo.models.values(), *demo.seeds, demo.data, *demo.recipes.values()]
    taken = [p.relative_to(demo.folder).as_posix() for p in targets if os.path.lexists(p)]
    if taken:
        shown = ", ".join(taken[:4]) + (f" and {len(taken) - 4} more" if len(taken) > 4 else "")
        raise OutputError(
            f"already holds {shown}, which the demo would replace",
            file=demo.folder,
            hint="give a new or empty folder; the demo never overwrites files it did not write",
        )


def _make_folder(folder: Path) -> None:
    """Create `folder` (and its parents) or reuse it; a file in its place, or a place we
    may not write, is an OutputError naming the path (a file among its parents too:
    `output_error` words ENOTDIR so)."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            "is a file, not a folder; the demo writes a folder of models",
            file=folder,
            hint="give a new folder name, or an existing folder of demo models",
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(folder, exc, "creating") from None


def _demo_version(marker: Path) -> str | None:
    """The version recorded in an earlier demo's demo.json; None if absent or unreadable."""
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("version") if isinstance(record, dict) else None


def _seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return factory()


def _save(
    model: nn.Module, path: Path, what: str, test: Dataset, say: Callable[[str], None]
) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_state_dict(state, path, metadata={"merger_demo": what}, overwrite=True)
    say(f"wrote {path.name}: {what} (test accuracy {accuracy(model, test):.1%})")


def _npz_bytes(data: Dataset) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, x=data.x.numpy(), y=data.y.numpy())
    return buf.getvalue()
