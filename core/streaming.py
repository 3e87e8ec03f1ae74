"""The streaming executor behind every tensorwise merge.

A merge reads (N+1)·S bytes, writes S and does a few flops per byte, so it is bound by
I/O and by memory traffic. Three stages therefore overlap, each on its own thread:
a reader fills buffers with the next tensors, the caller's thread computes, a writer
thread streams results into the `CheckpointWriter`. Buffers come from a pool keyed by
(shape, dtype): once a buffer has been touched it is reused, because first-touch page
faults cost as much as the read itself. The pool has a byte budget, so peak memory is a
small multiple of the largest tensor, never of the model.

Cancel (`Progress.cancel`) or any error stops all three stages within a fraction of a
second, aborts the writer (no partial output remains) and re-raises.
"""

from __future__ import annotations

import mmap
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from core.checkpoints import Checkpoint, CheckpointWriter
from core.checkpoints.tensor_info import itemsize
from core.errors import OutputError
from core.jobs import Progress

POLL_SECONDS = 0.05
ALIGNED_MIN_BYTES = 1 << 20
_DONE = object()


@dataclass(frozen=True)
class OutputTensor:
    """One tensor of the output and where its inputs come from.

    `sources[i]` is the index into the checkpoints of the i-th input passed to `compute`
    (read under the same name), or None to pass None. `compute_dtype`, when set, is the
    dtype its floating-point inputs are read as (else `run_streaming`'s `compute_dtype`):
    a float64 tensor is computed in float64, not rounded through float32.
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    sources: tuple[int | None, ...]
    compute_dtype: torch.dtype | None = None


# compute(output, inputs, tick): `tick(fraction)` reports progress within this output and
# is a cancellation point, for computations that take long on one large tensor.
Compute = Callable[[OutputTensor, list[torch.Tensor | None], Callable[[float], None]], torch.Tensor]


class _Stopped(Exception):  # noqa: N818 - internal signal, never escapes run_streaming
    """Raised inside a stage when another stage failed or the job was cancelled."""


class BufferPool:
    """Reusable CPU tensors keyed by (shape, dtype), within a byte budget.

    `take` blocks while the budget is spent by buffers that other items hold; an item
    may always get its buffers when it holds everything in use (so one item larger than
    the budget still runs). Idle buffers of other shapes are freed to make room.
    """

    def __init__(self, budget: int, stop: threading.Event) -> None:
        self.budget = budget
        self._stop = stop
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._allocated = 0  # bytes of every buffer we keep, idle or in use
        self._used = 0
        self._cond = threading.Condition()
        self.peak = 0

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, held: int = 0) -> torch.Tensor:
        """A buffer; `held` = bytes the calling item already holds from this pool."""
        key = (tuple(shape), dtype)
        need = _nbytes(shape, dtype)
        with self._cond:
            while True:
                if self._stop.is_set():
                    raise _Stopped
                free = self._free.get(key)
                if free:
                    self._used += need
                    return free.pop()
                self._evict_for(need)
                if self._allocated + need <= self.budget or self._used == held:
                    self._allocated += need
                    self._used += need
                    self.peak = max(self.peak, self._allocated)
                    break
                self._cond.wait(POLL_SECONDS)
        return aligned_empty(shape, dtype)

    def give(self, buffer: torch.Tensor) -> None:
        key = (tuple(buffer.shape), buffer.dtype)
        with self._cond:
            self._used -= _nbytes(key[0], key[1])
            self._free.setdefault(key, []).append(buffer)
            self._cond.notify_all()

    def _evict_for(self, need: int) -> None:
        for key in list(self._free):
            if self._allocated + need <= self.budget:
                return
            while self._free[key] and self._allocated + need > self.budget:
                self._free[key].pop()
                self._allocated -= _nbytes(*key)
            if not self._free[key]:
                del self._free[key]


def aligned_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor whose memory is page-aligned (anonymous mmap), so the
    writer can send it to disk with direct I/O without copying; small ones come from
    torch's allocator."""
    nbytes = _nbytes(shape, dtype)
    if nbytes < ALIGNED_MIN_BYTES:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(mmap.mmap(-1, nbytes), dtype=torch.uint8)
    return raw.view(dtype).view(shape)


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * itemsize(dtype)


@dataclass
class _Item:
    output: OutputTensor
    inputs: list[torch.Tensor | None]
    buffers: list[torch.Tensor]  # what to give back to the pool


class _Stage(threading.Thread):
    """A worker thread that records its exception instead of printing it."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn, self._stop_event = target, stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except _Stopped:
            pass
        except BaseException as exc:  # re-raised on the caller's thread
            self.error = exc
            self._stop_event.set()


def run_streaming(
    checkpoints: Sequence[Checkpoint],
    outputs: Sequence[OutputTensor],
    compute: Compute,
    writer: CheckpointWriter,
    progress: Progress,
    *,
    compute_dtype: torch.dtype = torch.float32,
    prefetch: int = 2,
    budget_bytes: int | None = None,
) -> None:
    """Read, compute and write every output in order, overlapping the three.

    Floating-point sources are read as `compute_dtype` (or the output's own
    `compute_dtype`), integer and bool ones as stored.
    `compute` may change its inputs in place and may return one of them. The result is
    cast to `output.dtype` and written. `prefetch` is how many tensors the reader may
    fill ahead of the item being computed (memory permitting); `budget_bytes` bounds the
    input buffers (default: the largest item plus `prefetch - 1` of the largest tensors).
    On error or cancel the writer is aborted and the exception re-raised.
    """
    stop = threading.Event()
    pool = BufferPool(budget_bytes or 0, stop)
    out_pool = BufferPool(1 << 62, stop)  # cast targets: bounded by the write queue
    ready: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    to_write: queue.Queue = queue.Queue(maxsize=2)
    total = sum(_nbytes(o.shape, o.dtype) for o in outputs)
    written = [0]
    shown = [0.0]  # the bar never goes back: ticks run ahead of what the writer counted

    def check() -> None:
        if stop.is_set():
            raise _Stopped

    def read_all() -> None:
        for output in outputs:
            item = _read_item(checkpoints, output, pool, compute_dtype, check)
            _put(ready, item, stop)
        _put(ready, _DONE, stop)

    def write_all() -> None:
        while (job := _get(to_write, stop)) is not _DONE:
            name, tensor, buffers, owner = job
            writer.write(name, tensor, check=check)
            written[0] += tensor.numel() * tensor.element_size()
            for b in buffers:
                owner.give(b)

    reader = _Stage("merger-read", read_all, stop)
    writing = _Stage("merger-write", write_all, stop)
    stages = (reader, writing)
    try:
        if budget_bytes is None:
            pool.budget = _default_budget(checkpoints, outputs, compute_dtype, prefetch)
        reader.start()
        writing.start()
        for output in outputs:
            item = _wait(ready, stop, progress, stages)
            tick = _ticker(progress, output, written, shown, total)
            result, buffers, owner = _compute_one(item, compute, tick, pool, out_pool)
            _wait_put(to_write, (output.name, result, buffers, owner), stop, progress, stages)
            shown[0] = max(shown[0], written[0])
            progress.update(shown[0], total, output.name)
        _wait_put(to_write, _DONE, stop, progress, stages)
        while writing.is_alive():
            writing.join(POLL_SECONDS)
            progress.check()
        reader.join()
        _raise_stage_errors(stages)
        progress.update(total, total, "written")
    except BaseException:
        stop.set()
        for stage in stages:
            if stage.is_alive():
                stage.join()
        writer.abort()
        _raise_stage_errors(stages)
        raise
    finally:
        stop.set()  # lets any still-blocked stage exit


def _default_budget(checkpoints, outputs, compute_dtype, prefetch) -> int:
    largest_item, largest_tensor = 0, 0
    for o in outputs:
        sizes = [
            _source_bytes(checkpoints[s].info(o.name), o.compute_dtype or compute_dtype)
            for s in o.sources
            if s is not None
        ]
        largest_item = max(largest_item, sum(sizes))
        largest_tensor = max([largest_tensor, *sizes])
    # Measured (4 x 1 GB fp32, 40 MB tensors): one item plus one tensor of read-ahead
    # keeps the pipeline as fast as deeper read-ahead, at 0.43 GB peak RSS against 0.48.
    return largest_item + max(0, prefetch - 1) * largest_tensor


def _read_dtype(stored: torch.dtype, compute_dtype: torch.dtype) -> torch.dtype:
    return compute_dtype if stored.is_floating_point else stored


def _source_bytes(info, compute_dtype) -> int:
    return _nbytes(info.shape, _read_dtype(info.dtype, compute_dtype))


def _read_item(checkpoints, output: OutputTensor, pool: BufferPool, compute_dtype, check):
    inputs: list[torch.Tensor | None] = []
    buffers: list[torch.Tensor] = []
    held = 0
    try:
        for source in output.sources:
            if source is None:
                inputs.append(None)
                continue
            ckpt = checkpoints[source]
            info = ckpt.info(output.name)
            dtype = _read_dtype(info.dtype, output.compute_dtype or compute_dtype)
            buf = pool.take(info.shape, dtype, held)
            buffers.append(buf)
            held += _nbytes(info.shape, dtype)
            inputs.append(ckpt.get(output.name, dtype=dtype, out=buf, check=check))
    except BaseException:
        for b in buffers:
            pool.give(b)
        raise
    return _Item(output, inputs, buffers)


def _ticker(
    progress: Progress, output: OutputTensor, written: list[int], shown: list[float], total: int
) -> Callable[[float], None]:
    """Progress within `output`: what is written so far plus this tensor's done fraction."""
    size = _nbytes(output.shape, output.dtype)

    def tick(fraction: float) -> None:
        shown[0] = max(shown[0], min(total, written[0] + fraction * size))
        progress.update(shown[0], total, output.name)

    return tick


def _compute_one(
    item: _Item,
    compute: Compute,
    tick: Callable[[float], None],
    pool: BufferPool,
    out_pool: BufferPool,
):
    """Run `compute`, cast its result; returns (tensor to write, buffers to give, pool)."""
    output = item.output
    try:
        result = compute(output, item.inputs, tick)
    except BaseException:
        for b in item.buffers:
            pool.give(b)
        raise
    item.inputs.clear()
    if tuple(result.shape) != tuple(output.shape):
        for b in item.buffers:
            pool.give(b)
        raise ValueError(
            f"the merge produced shape {tuple(result.shape)} for '{output.name}', "
            f"expected {tuple(output.shape)}"
        )
    if result.dtype != output.dtype or result.device.type != "cpu":
        cast = out_pool.take(output.shape, output.dtype)
        cast.copy_(result)
        try:  # before the buffers go back: `result` may be one, refilled by the reader
            check_cast_range(result, cast, output.name)
        except OutputError:
            out_pool.give(cast)
            raise
        finally:
            for b in item.buffers:
                pool.give(b)
        return cast, [cast], out_pool
    keep = [b for b in item.buffers if _same_storage(b, result)]
    for b in item.buffers:
        if not any(b is k for k in keep):
            pool.give(b)
    try:
        check_compute_range(result, output.name)
    except OutputError:
        for b in keep:
            pool.give(b)
        raise
    return result, keep, pool


def _all_finite(x: torch.Tensor) -> bool:
    """`isfinite(x).all()`, also for float8 tensors (torch has no isfinite for them)."""
    if x.dtype.is_floating_point and x.element_size() == 1:
        x = x.float()
    return bool(torch.isfinite(x).all())


# Dtypes whose largest value is below this overflow in real merges (float16: 65504, the
# float8s); bfloat16 shares float32's exponent range and is not scanned.
_NARROW_MAX = 1e30


def check_compute_range(result: torch.Tensor, name: str) -> None:
    """Refuse a merge computed in a dtype narrower than float32's range (float16) that
    overflowed: the inputs were finite, so an infinity here is the arithmetic's, and would
    be saved without a word. float32 and wider are not scanned (the scan costs a pass)."""
    if not result.dtype.is_floating_point:
        return
    if torch.finfo(result.dtype).max > _NARROW_MAX or _all_finite(result):
        return
    kind = str(result.dtype).removeprefix("torch.")
    raise OutputError(
        f"computing the merge in {kind} overflowed its range (largest "
        f"{torch.finfo(result.dtype).max:.6g}): the result holds infinite or NaN values",
        tensor=name,
        hint=f"compute in float32 and save {kind}: --dtype float32 --out-dtype {kind} "
        "(Compute dtype and Output dtype in the window); merged values that are themselves "
        f"beyond {kind}'s range are then refused by name",
    )


def check_cast_range(result: torch.Tensor, cast: torch.Tensor, name: str) -> None:
    """Refuse a cast that turned finite values into infinities (float16 ends at 65504).

    Inputs are checked finite before merging, so an infinity here is the output dtype's
    range, and a saved model full of inf would only fail later, far from the cause. Only
    narrowing casts are checked: the scan costs a pass over the tensor."""
    check_compute_range(result, name)
    if not (result.dtype.is_floating_point and cast.dtype.is_floating_point):
        return
    if torch.finfo(cast.dtype).max >= torch.finfo(result.dtype).max:
        return
    if cast.element_size() == 1:  # float8 saturates (e4m3fn: 1000 → 448) instead of inf
        largest = float(result.abs().max()) if result.numel() else 0.0
        if largest <= torch.finfo(cast.dtype).max:
            return
    elif _all_finite(cast):
        return
    largest = float(result.abs().max())
    raise OutputError(
        f"merged values up to {largest:.4g} exceed {str(cast.dtype).removeprefix('torch.')}'s "
        f"range (largest {torch.finfo(cast.dtype).max:.6g}) and would be saved as "
        f"{'its largest value' if cast.element_size() == 1 else 'infinity'}",
        tensor=name,
        hint="save as bfloat16 or float32 (--out-dtype, or Output dtype in the window)",
    )


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _put(q: queue.Queue, value, stop: threading.Event, check=None) -> None:
    """Put, waking every POLL_SECONDS to honour `stop` (and `check`, which may raise)."""
    while True:
        if check is not None:
            check()
        if stop.is_set():
            raise _Stopped
        try:
            q.put(value, timeout=POLL_SECONDS)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event, check=None):
    """Get, waking every POLL_SECONDS to honour `stop` (and `check`, which may raise)."""
    while True:
        if check is not None:
            check()
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue


def _raise_stage_errors(stages) -> None:
    for stage in stages:
        if stage.error is not None:
            raise stage.error


def _caller_checks(progress: Progress, stages):
    """What the caller's thread checks while waiting: cancel, and the other stages' errors."""

    def check() -> None:
        progress.check()
        _raise_stage_errors(stages)

    return check


def _wait(q: queue.Queue, stop, progress: Progress, stages):
    return _get(q, stop, _caller_checks(progress, stages))


def _wait_put(q: queue.Queue, value, stop, progress: Progress, stages) -> None:
    _put(q, value, stop, _caller_checks(progress, stages))
