"""`merger eval --arch file.py:factory` runs the user's model as it is: no spec is traced."""

from __future__ import annotations

import json
import textwrap

import torch
from safetensors.torch import save_file

from core.cli import main as cli_main

TWO_HEADS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class TwoHeads(nn.Module):
        '''Concatenates two branches: beyond the permutation tracer, fine to evaluate.'''

        def __init__(self):
            super().__init__()
            self.a = nn.Linear(64, 16)
            self.b = nn.Linear(64, 16)
            self.out = nn.Linear(32, 10)

        def forward(self, x):
            return self.out(torch.relu(torch.cat([self.a(x), self.b(x)], 1)))
    """
)


def test_eval_runs_a_model_the_tracer_cannot_handle(tmp_path, capsys):
    (tmp_path / "heads.py").write_text(TWO_HEADS)
    # the factory lives in another file and imports its neighbour, as users' code does
    (tmp_path / "entry.py").write_text(
        "from heads import TwoHeads\n\ndef make():\n    return TwoHeads()\n"
    )
    import importlib.util
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        spec = importlib.util.spec_from_file_location("heads_for_test", tmp_path / "heads.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    net = module.TwoHeads().eval()
    save_file(net.state_dict(), str(tmp_path / "heads.safetensors"))
    code = cli_main(
        [
            "eval",
            str(tmp_path / "heads.safetensors"),
            "--arch",
            f"{tmp_path / 'entry.py'}:make",
            "--data",
            "digits",
            "--json",
        ]
    )
    assert code == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["architecture"] == "entry.py:make"
    from core.data import load_dataset

    data = load_dataset("digits")
    with torch.no_grad():
        logits = net(torch.as_tensor(data.x, dtype=torch.float32))
    expected = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(data.y)))
    assert abs(row["loss"] - expected) < 1e-4
