"""Weight matching compares weights alone, but data given with it is not always unused: a
model file without `example_input` is traced on the data's example shape. The notes of
`merger align --by weights` and of a weight_matching merge say which it was."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from core.cli import main

NET = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Net(nn.Module):
        '''Takes flat 64-pixel digits and reshapes them itself: traced on any other
        shape (the guess from its first conv is 1x32x32), the reshape breaks.'''

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            x = x.view(-1, 1, 8, 8)
            h = F.relu(self.conv2(F.relu(self.conv1(x))))
            return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))

    def make():
        return Net()
    """
)


@pytest.fixture
def setup(tmp_path):
    """Two trained-looking copies of Net, flat data, and model files with and without an
    example_input of their own."""
    (tmp_path / "net.py").write_text(NET)
    (tmp_path / "own.py").write_text(NET + "\nexample_input = torch.randn(2, 1, 8, 8)\n")
    spec = importlib.util.spec_from_file_location("net_for_notes", tmp_path / "net.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        paths = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            path = tmp_path / f"m{seed}.safetensors"
            save_file(module.make().state_dict(), str(path))
            paths.append(str(path))
    finally:
        sys.modules.pop(spec.name, None)
    data = tmp_path / "flat.npz"
    np.savez(data, x=np.random.default_rng(0).random((16, 64)).astype(np.float32))
    return tmp_path, paths, str(data)


def notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]


def test_align_says_the_data_shaped_the_trace(setup, capsys):
    folder, (a, b), data = setup
    arch = f"{folder / 'net.py'}:make"
    out = str(folder / "al.safetensors")
    # without the data the model cannot be traced: it is not "unused"
    assert main(["align", a, b, "--arch", arch, "-o", out, "--quiet"]) == 1
    assert "reshape" in capsys.readouterr().err
    assert main(["align", a, b, "--arch", arch, "--data", data, "-o", out, "--quiet"]) == 0
    said = notes(capsys)
    assert not any("not used" in n for n in said), said
    assert any("only for its examples' shape [64], to trace net.py:make" in n for n in said)


def test_align_calls_the_data_unused_when_the_file_gives_its_own_input(setup, capsys):
    folder, (a, b), data = setup
    arch = f"{folder / 'own.py'}:make"
    out = str(folder / "al.safetensors")
    assert main(["align", a, b, "--arch", arch, "--data", data, "-o", out, "--quiet"]) == 0
    said = notes(capsys)
    assert any("--data is not used by --by weights" in n for n in said), said
    assert not any("to trace" in n for n in said)


def test_a_weight_matching_merge_says_the_data_shaped_the_trace(setup, capsys):
    folder, (a, b), data = setup
    out = str(folder / "wm.safetensors")
    for file, expected in (
        ("net.py", "served only for its examples' shape [64]"),
        ("own.py", "is not used for the merge"),
    ):
        args = ["merge", "--method", "weight_matching", a, b, "--data", data, "--arch"]
        args += [f"{folder / file}:make", "--set", "reset_bn=false", "-o", out, "--overwrite"]
        assert main([*args, "--quiet"]) == 0
        said = [n for n in notes(capsys) if n.startswith("note: data flat")]
        assert len(said) == 1 and expected in said[0], (file, said)
        assert said[0].endswith(
            "weight matching needs none, and the models have no BatchNorm statistics"
        )
