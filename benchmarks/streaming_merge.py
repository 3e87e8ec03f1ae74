"""Benchmark: task arithmetic over a base and three 1 GB fp32 checkpoints, streamed.

Runs the same command as a user (`python -m core.cli run RECIPE -o OUT`, or with
`--mode direct` a child that calls `run_streaming` itself) and prints, from one run:

* wall time of the command, its start-up (same command on tiny files) and the rest;
* peak RSS of the command (from wait4, exact);
* a plain read of the inputs and a plain write+fsync of as many bytes as the output,
  measured beside it on the same disk;
* the ratio (time beyond start-up) / (read + write), target <= 1.2, and RSS target 0.5 GB.

Write speed on a VM is noisy, so each repetition measures its own baseline right before
the merge, and medians are reported. Synthetic inputs are kept in --dir with --keep.

    .venv/bin/python benchmarks/streaming_merge.py [--repeat 3] [--keep] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS, COLS, TENSORS = 4096, 2560, 24  # 24 x 40 MiB = 1.0 GB per model in fp32
NAMES = ["base", "m1", "m2", "m3"]


# -- synthetic checkpoints ------------------------------------------------------------
def make_models(folder: Path, rows: int, cols: int, tensors: int) -> list[Path]:
    """Write base + 3 models (random fp32) unless they exist already."""
    import torch

    from core.checkpoints import CheckpointWriter, TensorInfo

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{n}.safetensors" for n in NAMES]
    plan = [
        TensorInfo.of(f"layers.{i}.weight", (rows, cols), torch.float32) for i in range(tensors)
    ]
    gen = torch.Generator().manual_seed(0)
    buf = torch.empty(rows, cols)
    for path in paths:
        if path.exists():
            continue
        with CheckpointWriter(path, plan) as writer:
            for info in plan:
                writer.write(info.name, buf.normal_(generator=gen))
            writer.commit()
    return paths


def write_recipe(folder: Path, models: list[Path]) -> Path:
    lines = [
        "merge_method: task_arithmetic",
        f"base_model: {models[0]}",
        "dtype: float32",
        "models:",
    ]
    for m in models[1:]:
        lines += [f"  - model: {m}", "    parameters: {weight: 0.5}"]
    recipe = folder / "recipe.yaml"
    recipe.write_text("\n".join(lines) + "\n")
    return recipe


# -- the command under test -----------------------------------------------------------
def command(mode: str, recipe: Path, models: list[Path], out: Path) -> list[str]:
    if mode == "cli":
        return [sys.executable, "-m", "core.cli", "run", str(recipe), "-o", str(out), "--quiet"]
    return [sys.executable, str(Path(__file__).resolve()), "--child", str(out), *map(str, models)]


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Run `cmd`; return (wall seconds, peak RSS in GB) of that process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, usage.ru_maxrss * 1024 / 1e9


def child_direct(out: str, models: list[str]) -> None:
    """The merge through run_streaming, without the CLI (used before the CLI existed)."""
    import torch

    from core.checkpoints import CheckpointWriter, TensorInfo, open_checkpoint
    from core.jobs import Progress
    from core.streaming import OutputTensor, run_streaming

    ckpts = [open_checkpoint(m) for m in models]
    outputs = [OutputTensor(i.name, i.shape, i.dtype, (1, 2, 3, 0)) for i in ckpts[0].infos()]

    def compute(output, tensors, tick):
        *ms, base = tensors
        acc = ms[0].sub_(base)
        for m in ms[1:]:
            acc.add_(m.sub_(base))
        return acc.mul_(0.5).add_(base)

    plan = [TensorInfo.of(o.name, o.shape, o.dtype) for o in outputs]
    with CheckpointWriter(out, plan, protect=models) as writer:
        run_streaming(ckpts, outputs, compute, writer, Progress(), compute_dtype=torch.float32)
        writer.commit()


# -- baselines ------------------------------------------------------------------------
def plain_read(paths: list[Path]) -> float:
    buf = bytearray(64 << 20)
    start = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - start


def plain_write(path: Path, nbytes: int) -> float:
    chunk = os.urandom(1 << 20) * 64
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        left = nbytes
        while left > 0:
            left -= f.write(memoryview(chunk)[: min(left, len(chunk))])
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# -- main -----------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "merger-bench")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic models for next time")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mode", choices=["auto", "cli", "direct"], default="auto")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_direct(args.child[0], args.child[1:])
        return
    mode = args.mode
    if mode == "auto":
        mode = "cli" if (ROOT / "core" / "cli" / "__init__.py").exists() else "direct"
    env = dict(os.environ, MERGER_CACHE_DIR=str(args.dir / "cache"))
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    big = make_models(args.dir / "big", ROWS, COLS, TENSORS)
    tiny = make_models(args.dir / "tiny", 8, 8, TENSORS)
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s ({args.dir})")
    big_recipe, tiny_recipe = (
        write_recipe(args.dir / "big", big),
        write_recipe(args.dir / "tiny", tiny),
    )
    out, tiny_out = args.dir / "out-big", args.dir / "out-tiny"
    out_bytes = ROWS * COLS * 4 * TENSORS
    try:
        remove(out)
        remove(tiny_out)
        # warm-up: fills the page cache and the input-hash cache, like a second run by a user
        timed(command(mode, big_recipe, big, out), env)
        remove(out)
        rows = []
        for _ in range(args.repeat):
            read = min(plain_read(big) for _ in range(2))
            write = plain_write(args.dir / "plain-write.bin", out_bytes)
            startup, _ = timed(command(mode, tiny_recipe, tiny, tiny_out), env)
            remove(tiny_out)
            wall, rss = timed(command(mode, big_recipe, big, out), env)
            remove(out)
            beyond = wall - startup
            rows.append((wall, startup, beyond, rss, read, write, beyond / (read + write)))
            print(
                f"  run: wall {wall:5.2f} s  start-up {startup:4.2f} s  beyond {beyond:5.2f} s  "
                f"peak RSS {rss:4.2f} GB | plain read {read:4.2f} s  write+fsync {write:4.2f} s"
                f"  -> ratio {rows[-1][-1]:4.2f}"
            )
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(
            f"\nmode {mode}: task arithmetic, base + 3 x 1.0 GB fp32 -> 1.0 GB (medians of "
            f"{args.repeat})"
        )
        print(f"  wall time             {med[0]:6.2f} s")
        print(f"  start-up (tiny files) {med[1]:6.2f} s")
        print(f"  beyond start-up       {med[2]:6.2f} s")
        print(f"  peak RSS              {med[3]:6.2f} GB   (target < 0.5 GB)")
        print(f"  plain read of inputs  {med[4]:6.2f} s")
        print(f"  plain write + fsync   {med[5]:6.2f} s")
        print(f"  ratio beyond/(r+w)    {med[6]:6.2f}     (target <= 1.2)")
    finally:
        remove(out)
        remove(tiny_out)
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
