"""What we know about a stored tensor without reading it, and the dtype names of safetensors.

The safetensors dtype codes are the vocabulary of the file format; keeping the one table
here lets the reader validate headers and the writer produce them from the same source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# safetensors dtype code -> torch dtype. Float8 types exist only in newer torch builds.
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _code, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        SAFETENSORS_DTYPES[_code] = getattr(torch, _attr)

DTYPE_CODES: dict[torch.dtype, str] = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def itemsize(dtype: torch.dtype) -> int:
    """Bytes per element of `dtype`."""
    return torch.empty((), dtype=dtype).element_size()


def dtype_code(dtype: torch.dtype) -> str:
    """The safetensors code for `dtype`; ValueError for dtypes the format cannot hold."""
    try:
        return DTYPE_CODES[dtype]
    except KeyError:
        raise ValueError(f"safetensors cannot store tensors of dtype {dtype}") from None


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape, dtype and size in bytes of one stored (or planned) tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int

    @classmethod
    def of(cls, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> TensorInfo:
        """Build an info whose nbytes follows from shape and dtype."""
        shape = tuple(int(d) for d in shape)
        return cls(name, shape, dtype, math.prod(shape) * itemsize(dtype))

    @classmethod
    def of_tensor(cls, name: str, tensor: torch.Tensor) -> TensorInfo:
        return cls.of(name, tuple(tensor.shape), tensor.dtype)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def byte_view(tensor: torch.Tensor) -> memoryview:
    """A byte view of a contiguous CPU tensor's memory, without copying.

    Writable when the tensor is: the reader fills buffers through it, the writer sends it
    to `os.write`. Works for every dtype, bool and bfloat16 included (numpy has no bf16).
    """
    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        return memoryview(bytearray())
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")
