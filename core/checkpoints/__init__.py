"""Open, inspect and write model checkpoints.

Reading is lazy (headers at open, one tensor per `get`); writing streams tensors into
safetensors under a temporary name published atomically at commit. Formats: safetensors
(single or sharded), torch pickles through `weights_only=True` only, and Hugging Face-style
folders holding either.
"""

from core.checkpoints.folder import is_checkpoint_path, open_checkpoint
from core.checkpoints.reader import Checkpoint
from core.checkpoints.save import save_state_dict
from core.checkpoints.shards import parse_size
from core.checkpoints.tensor_info import SAFETENSORS_DTYPES, TensorInfo
from core.checkpoints.writer import CheckpointWriter

__all__ = [
    "SAFETENSORS_DTYPES",
    "Checkpoint",
    "CheckpointWriter",
    "TensorInfo",
    "is_checkpoint_path",
    "open_checkpoint",
    "parse_size",
    "save_state_dict",
]
