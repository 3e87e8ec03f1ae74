"""run_streaming: right numbers, dtypes, buffer reuse, and clean stops on error or cancel."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from checkpoint_fixtures import files_under

from core.checkpoints import CheckpointWriter, TensorInfo, open_checkpoint, save_state_dict
from core.errors import Cancelled, CheckpointError
from core.jobs import Progress
from core.streaming import BufferPool, OutputTensor, run_streaming


def models(tmp_path, states):
    paths = []
    for i, state in enumerate(states):
        paths.append(tmp_path / "in" / f"m{i}.safetensors")
        save_state_dict(state, paths[-1])
    return [open_checkpoint(p) for p in paths]


def task_arithmetic(weight):
    """base + weight * sum(m_i - base), in place in the first model's buffer."""

    def compute(output, tensors, tick):
        *ms, base = tensors
        if not base.is_floating_point():
            return base
        acc = ms[0].sub_(base)
        for m in ms[1:]:
            acc.add_(m.sub_(base))
        return acc.mul_(weight).add_(base)

    return compute


def run(tmp_path, ckpts, outputs, compute, *, out="out.safetensors", progress=None, **kw):
    plan = [TensorInfo.of(o.name, o.shape, o.dtype) for o in outputs]
    with CheckpointWriter(tmp_path / out, plan) as writer:
        run_streaming(ckpts, outputs, compute, writer, progress or Progress(), **kw)
        writer.commit()
    return open_checkpoint(tmp_path / out)


def test_task_arithmetic_matches_hand_computed_values(tmp_path):
    base = {"w": torch.tensor([1.0, 2.0, 3.0]), "steps": torch.tensor([7])}
    m1 = {"w": torch.tensor([2.0, 2.0, 2.0]), "steps": torch.tensor([1])}
    m2 = {"w": torch.tensor([0.0, 4.0, 3.0]), "steps": torch.tensor([2])}
    ckpts = models(tmp_path, [m1, m2, base])
    outputs = [
        OutputTensor("w", (3,), torch.float16, (0, 1, 2)),
        OutputTensor("steps", (1,), torch.int64, (0, 1, 2)),
    ]
    # base + 0.5 * ((m1 - base) + (m2 - base)) = [1,2,3] + 0.5 * [0, 2, -1]
    with run(tmp_path, ckpts, outputs, task_arithmetic(0.5)) as out:
        assert out.info("w").dtype == torch.float16
        assert out.get("w").tolist() == [1.0, 3.0, 2.5]
        assert out.get("steps").tolist() == [7]


def test_sources_are_cast_to_the_compute_dtype_and_none_passes_none(tmp_path):
    a = {"w": torch.tensor([1.5, -2.0]).bfloat16(), "mask": torch.tensor([True, False])}
    ckpts = models(tmp_path, [a])
    seen = {}

    def compute(output, tensors, tick):
        seen[output.name] = [None if t is None else t.dtype for t in tensors]
        return tensors[0] if tensors[0].dtype == torch.bool else tensors[0] * 2

    outputs = [
        OutputTensor("w", (2,), torch.float32, (0, None)),
        OutputTensor("mask", (2,), torch.bool, (0,)),
    ]
    with run(tmp_path, ckpts, outputs, compute, compute_dtype=torch.float64) as out:
        assert out.get("w").tolist() == [3.0, -4.0]
        assert out.get("mask").tolist() == [True, False]
    assert seen == {"w": [torch.float64, None], "mask": [torch.bool]}


def test_the_same_model_twice_gets_two_private_buffers(tmp_path):
    ckpts = models(tmp_path, [{"w": torch.tensor([1.0, 2.0])}])

    def compute(output, tensors, tick):
        a, b = tensors
        assert a.data_ptr() != b.data_ptr()
        return a.add_(b)  # would double-count if a and b were one buffer

    with run(tmp_path, ckpts, [OutputTensor("w", (2,), torch.float32, (0, 0))], compute) as out:
        assert out.get("w").tolist() == [2.0, 4.0]


def test_results_may_be_views_or_new_tensors(tmp_path):
    ckpts = models(tmp_path, [{"a": torch.arange(6.0), "b": torch.ones(2, 3)}])

    def compute(output, tensors, tick):
        if output.name == "a":
            return tensors[0].view(2, 3)  # a view on the input buffer
        return tensors[0] + 1  # a fresh tensor

    outputs = [
        OutputTensor("a", (2, 3), torch.float32, (0,)),
        OutputTensor("b", (2, 3), torch.float32, (0,)),
    ]
    with run(tmp_path, ckpts, outputs, compute) as out:
        assert torch.equal(out.get("a"), torch.arange(6.0).view(2, 3))
        assert torch.equal(out.get("b"), torch.full((2, 3), 2.0))


def test_many_tensors_reuse_a_few_buffers_and_respect_a_tiny_budget(tmp_path):
    state = {f"t{i}": torch.full((64, 64), float(i)) for i in range(30)}
    ckpts = models(tmp_path, [state, state])
    pointers = set()

    def compute(output, tensors, tick):
        pointers.update(t.data_ptr() for t in tensors)
        return tensors[0].add_(tensors[1])

    outputs = [OutputTensor(k, (64, 64), torch.float32, (0, 1)) for k in state]
    # a budget smaller than one item still runs, one item at a time
    for budget in (None, 1):
        pointers.clear()
        with run(
            tmp_path, ckpts, outputs, compute, budget_bytes=budget, out=f"o{budget}.safetensors"
        ) as out:
            assert all(torch.equal(out.get(k), 2 * v) for k, v in state.items())
        assert len(pointers) <= 8  # buffers are reused, not allocated per tensor


def test_buffer_pool_reuses_and_evicts_within_budget():
    stop = threading.Event()
    pool = BufferPool(budget=4 * 100, stop=stop)
    a = pool.take((100,), torch.uint8)
    pool.give(a)
    assert pool.take((100,), torch.uint8) is a
    pool.give(a)
    b = pool.take((300,), torch.uint8)  # fits beside the idle one: 100 + 300 <= 400
    pool.give(b)
    c = pool.take((350,), torch.uint8)  # must evict idle buffers to stay within budget
    assert pool._allocated <= 400 and c.numel() == 350


def test_wrong_result_shape_is_an_error_and_leaves_no_file(tmp_path):
    ckpts = models(tmp_path, [{"w": torch.ones(4)}])
    with pytest.raises(ValueError, match="shape"):
        run(
            tmp_path,
            ckpts,
            [OutputTensor("w", (4,), torch.float32, (0,))],
            lambda o, ts, tick: ts[0][:2],
        )
    assert files_under(tmp_path / "in") == ["m0.safetensors"]
    assert not (tmp_path / "out.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_cancel_mid_stream_leaves_no_file(tmp_path):
    state = {f"t{i}": torch.randn(100) for i in range(20)}
    ckpts = models(tmp_path, [state])
    progress = Progress()
    calls = []

    def compute(output, tensors, tick):
        calls.append(output.name)
        if len(calls) == 5:
            progress.cancel()
        return tensors[0]

    outputs = [OutputTensor(k, (100,), torch.float32, (0,)) for k in state]
    with pytest.raises(Cancelled):
        run(tmp_path, ckpts, outputs, compute, progress=progress, out="o")
    assert len(calls) < 20
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_cancel_from_another_thread_while_the_writer_is_busy(tmp_path):
    n = 2**18  # 1 MiB tensors: written block by block, so the hook runs for each one
    state = {f"t{i}": torch.randn(n) for i in range(10)}
    ckpts = models(tmp_path, [state])
    progress = Progress()
    outputs = [OutputTensor(k, (n,), torch.float32, (0,)) for k in state]
    plan = [TensorInfo.of(o.name, o.shape, o.dtype) for o in outputs]
    started = threading.Event()
    with CheckpointWriter(tmp_path / "o", plan) as writer:

        def slow(path, offset):  # a very slow disk; cancel arrives during the writes
            started.set()
            threading.Event().wait(0.05)

        writer.fault_hook = slow
        threading.Thread(target=lambda: started.wait(5) and progress.cancel()).start()
        with pytest.raises(Cancelled):
            run_streaming(ckpts, outputs, lambda o, ts, tick: ts[0], writer, progress)
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_a_read_error_mid_stream_is_reraised_and_leaves_no_file(tmp_path):
    state = {f"t{i}": torch.randn(1000) for i in range(5)}
    ckpts = models(tmp_path, [state])
    path = ckpts[0].files[0]
    os.truncate(path, os.path.getsize(path) - 2000)  # the last tensors are gone
    outputs = [OutputTensor(k, (1000,), torch.float32, (0,)) for k in state]
    with pytest.raises(CheckpointError, match="t4"):
        run(tmp_path, ckpts, outputs, lambda o, ts, tick: ts[0], out="o")
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_progress_reaches_the_total_in_bytes(tmp_path):
    state = {f"t{i}": torch.randn(10) for i in range(4)}
    ckpts = models(tmp_path, [state])
    events = []
    progress = Progress(events.append, min_interval=0)
    outputs = [OutputTensor(k, (10,), torch.float16, (0,)) for k in state]
    run(tmp_path, ckpts, outputs, lambda o, ts, tick: ts[0], progress=progress).close()
    assert events[-1].done == events[-1].total == 4 * 10 * 2
    assert all(a.done <= b.done for a, b in zip(events, events[1:], strict=False))
