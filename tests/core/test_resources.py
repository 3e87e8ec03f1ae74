"""Memory estimates against hand-counted buffers; refusal messages; GPU OOM fallback."""

from __future__ import annotations

import pytest
import torch

from core.checkpoints import TensorInfo, open_checkpoint, save_state_dict
from core.errors import ResourceError
from core.resources import (
    FIXED_OVERHEAD,
    check_memory,
    check_merge_memory,
    estimate_merge_memory,
    run_on_device,
)


def model(scale: int = 1) -> list[TensorInfo]:
    return [
        TensorInfo.of("a", (10 * scale, 10), torch.float32),  # 400 B per scale
        TensorInfo.of("b", (3,), torch.int64),  # 24 B, never cast
    ]


def test_tensorwise_counts_the_item_read_ahead_result_and_write_queue():
    # item 'a' = 2 x 400; plus (prefetch 2 + result + 2 queued) x largest 400
    assert estimate_merge_memory([model(), model()], "tensorwise") == 800 + 5 * 400 + FIXED_OVERHEAD


def test_compute_dtype_scales_floats_only():
    got = estimate_merge_memory([model(), model()], "tensorwise", compute_dtype=torch.bfloat16)
    assert got == 400 + 5 * 200 + FIXED_OVERHEAD
    ints_only = [[TensorInfo.of("b", (3,), torch.int64)]]
    assert estimate_merge_memory(ints_only, "tensorwise", compute_dtype=torch.float16) == (
        24 + 5 * 24 + FIXED_OVERHEAD
    )


def test_model_level_holds_everything_twice():
    assert estimate_merge_memory([model(), model()], "model") == 2 * 2 * 424 + FIXED_OVERHEAD


def test_tensorwise_depends_on_the_largest_tensor_not_the_model_size():
    small_many = [[TensorInfo.of(f"t{i}", (10, 10), torch.float32) for i in range(1000)]] * 3
    one = [[TensorInfo.of("t0", (10, 10), torch.float32)]] * 3
    assert estimate_merge_memory(small_many, "tensorwise") == estimate_merge_memory(
        one, "tensorwise"
    )
    many_model = estimate_merge_memory(small_many, "model") - FIXED_OVERHEAD
    assert many_model == 1000 * (estimate_merge_memory(one, "model") - FIXED_OVERHEAD)


def test_more_inputs_never_need_less():
    sizes = [estimate_merge_memory([model(3)] * n, "tensorwise") for n in range(1, 6)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert estimate_merge_memory([], "tensorwise") == 0


def test_estimate_from_real_checkpoint_headers(tmp_path):
    state = {"w": torch.ones(256, 128), "n": torch.tensor(3)}
    paths = [save_state_dict(state, tmp_path / f"m{i}.safetensors")[0] for i in range(3)]
    infos = []
    for p in paths:
        with open_checkpoint(p) as ckpt:
            infos.append(ckpt.infos())
    w = 256 * 128 * 4
    assert estimate_merge_memory(infos, "tensorwise") == 3 * w + 5 * w + FIXED_OVERHEAD


def test_check_memory_refuses_with_both_numbers_and_advice():
    with pytest.raises(ResourceError) as err:
        check_memory(5_000_000_000, available=2_000_000_000)
    text = str(err.value)
    assert "5.0 GB" in text and "2.0 GB" in text and "smaller dtype" in text
    assert "\n" not in text


def test_check_memory_keeps_headroom_and_passes_when_it_fits():
    check_memory(800, available=1000)
    with pytest.raises(ResourceError):
        check_memory(950, available=1000)  # fits, but leaves the system nothing
    check_memory(1, available=None)  # this machine has more than a byte free


def test_check_merge_memory_returns_the_estimate():
    assert check_merge_memory([model()], "tensorwise", available=10**12) == estimate_merge_memory(
        [model()], "tensorwise"
    )
    with pytest.raises(ResourceError):
        check_merge_memory([model()], "model", available=10)


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_gpu_out_of_memory_falls_back_to_cpu_with_a_message():
    calls: list[str] = []

    def fn(device: str) -> str:
        calls.append(device)
        if device.startswith("cuda"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"done on {device}"

    log = Log()
    assert run_on_device(fn, "cuda:0", log) == "done on cpu"
    assert calls == ["cuda:0", "cpu"]
    assert len(log.lines) == 1 and "out of memory" in log.lines[0] and "CPU" in log.lines[0]


def test_fallback_hook_runs_before_the_retry():
    order: list[str] = []

    def fn(device: str) -> int:
        order.append(device)
        if device == "cuda":
            raise torch.cuda.OutOfMemoryError("oom")
        return 1

    run_on_device(fn, "cuda", None, on_fallback=lambda: order.append("release"))
    assert order == ["cuda", "release", "cpu"]


def test_out_of_memory_on_the_cpu_is_a_resource_error():
    def fn(device: str) -> None:
        raise torch.cuda.OutOfMemoryError("oom")

    with pytest.raises(ResourceError, match="CPU"):
        run_on_device(fn, "cpu")


def test_other_errors_are_not_retried():
    calls: list[str] = []

    def fn(device: str) -> None:
        calls.append(device)
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        run_on_device(fn, "cuda")
    assert calls == ["cuda"]
