"""`check_output_early`: what can be known about an output before the work starts."""

from __future__ import annotations

import pytest

from core.checkpoints.output_paths import check_output_early
from core.errors import OutputError


def test_a_writable_new_place_passes(tmp_path):
    check_output_early(tmp_path / "new" / "deeper" / "m.safetensors", [], overwrite=False)
    assert list(tmp_path.iterdir()) == []  # checking creates nothing


def test_inputs_existing_outputs_and_files_in_the_path_are_refused(tmp_path):
    model = tmp_path / "a.safetensors"
    model.write_bytes(b"weights")
    with pytest.raises(OutputError, match="one of the input models"):
        check_output_early(model, [model], overwrite=True)
    with pytest.raises(OutputError, match="already exists"):
        check_output_early(model, [], overwrite=False)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_early(model / "x" / "m.safetensors", [], overwrite=False)
    with pytest.raises(OutputError, match="'.pt' file"):
        check_output_early(tmp_path / "m.pt", [], overwrite=False)


def test_a_read_only_folder_is_refused(read_only_folder):
    ro = read_only_folder.require()
    with pytest.raises(OutputError, match="permission denied") as info:
        check_output_early(ro / "new" / "m.safetensors", [], overwrite=False)
    assert str(ro) in str(info.value)


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_output_name_is_refused_as_such(name):
    """Not as '.', which would then be 'the folder that contains the inputs'."""
    with pytest.raises(OutputError, match="the output name is empty"):
        check_output_early(name, [], overwrite=False)
