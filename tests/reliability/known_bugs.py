"""Bugs this suite found in files other people own, until they are fixed.

Each entry: corpus case id -> (fronts where it fails, what is wrong and the fix). Tests
mark these `xfail(strict=True)`, and the tally requires the failures to be exactly these,
so a fix shows up as an unexpected pass and the entry must then be removed here.
"""

from __future__ import annotations

BOTH = ("core", "cli")

KNOWN_BUGS: dict[str, tuple[tuple[str, ...], str]] = {
    "st_deep_json": (
        BOTH,
        "safetensors_format.read_header: json.loads raises RecursionError "
        "on deeply nested JSON; catch (RecursionError, ValueError) too",
    ),
    "st_huge_int": (
        BOTH,
        "read_header: json.loads raises ValueError (int over 4300 digits); "
        "catch ValueError (JSONDecodeError is a subclass)",
    ),
    "st_dtype_list": (
        BOTH,
        "_parse_entry: `code not in SAFETENSORS_DTYPES` raises TypeError "
        "for an unhashable dtype; test isinstance(code, str) first",
    ),
    "st_dtype_object": (BOTH, "same as st_dtype_list"),
    "st_zero_size_absurd": (
        BOTH,
        "_parse_entry accepts shape [2**40, 2**40, 0]; torch.empty "
        "overflows. Refuse any dim > 2**40 or prod(nonzero dims) >= 2**63",
    ),
    "wrong_notes.pt": (
        BOTH,
        "pickle_reader.load_pickle: torch.load of text raises IndexError, "
        "not caught; catch Exception after the UnpicklingError branch",
    ),
    "pickle_metadata_name": (
        BOTH,
        "a tensor named '__metadata__' reaches the writer's plan "
        "check (ValueError); refuse it in pickle_reader._entries",
    ),
    "pickle_complex_tensor": (
        BOTH,
        "complex tensors open, then the writer raises ValueError; "
        "refuse dtypes outside SAFETENSORS_DTYPES in _entries",
    ),
    "pickle_uint32_tensor": (BOTH, "same as pickle_complex_tensor (torch.uint32)"),
    "pickle_meta_tensor": (
        BOTH,
        "meta tensors open, then get() raises NotImplementedError; "
        "refuse tensor.device.type != 'cpu' (meta) in _entries",
    ),
    "path_fifo": (
        BOTH,
        "open_checkpoint on a FIFO blocks forever in open(); refuse paths "
        "that are not regular files (stat.S_ISREG) before opening",
    ),
    "folder_index_deep_json": (
        BOTH,
        "safetensors_reader.read_index: catch RecursionError and ValueError around json.loads",
    ),
    "folder_config_deep_json": (
        BOTH,
        "folder._read_config: catch RecursionError and ValueError around json.loads",
    ),
    "folder_config_huge_int": (BOTH, "same as folder_config_deep_json"),
}


def known(case_id: str, front: str) -> str | None:
    """The reason if (case, front) is a known bug, else None."""
    entry = KNOWN_BUGS.get(case_id)
    if entry and front in entry[0]:
        return entry[1]
    return None
