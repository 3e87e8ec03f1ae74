"""A model file given as the architecture runs only after the user agrees."""

from __future__ import annotations

from app_helpers import load_for_method, merge

import merger_app.qt_main_window as main_window

MODEL_PY = """
from torch import nn

def factory():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 10))

open(__file__ + ".ran", "w").close()
"""


def test_architecture_file_runs_only_after_consent(window, qtbot, tiny, tmp_path, monkeypatch):
    from core.checkpoints import open_checkpoint, save_state_dict

    # the tiny seeds saved under nn.Sequential's own names (0., 2., 4.)
    paths = []
    for i, src in enumerate(tiny.seeds):
        with open_checkpoint(src) as ckpt:
            state = {k.removeprefix("layers."): v for k, v in ckpt.state_dict().items()}
        paths.append(save_state_dict(state, tmp_path / f"s{i}.safetensors")[0])
    model_py = tmp_path / "model.py"
    model_py.write_text(MODEL_PY)
    load_for_method(window, tiny, "weight_matching")
    window.models.model.set_rows([])
    assert not window.add_models(paths)
    window.method.arch_combo.setCurrentText(f"{model_py}:factory")

    answers = []
    monkeypatch.setattr(
        main_window, "ask_run_code", lambda parent, arch: answers.append(arch) or False
    )
    assert window.merge() is False
    assert answers == [f"{model_py}:factory"]
    assert not (tmp_path / "model.py.ran").exists()

    monkeypatch.setattr(main_window, "ask_run_code", lambda parent, arch: True)
    result = merge(window, qtbot)
    assert result is not None, window.last_error and window.last_error.text()
    assert (tmp_path / "model.py.ran").exists()


def test_a_mistyped_architecture_blocks_merge_and_says_why(window, tiny, tmp_path):
    """Not 'Ready to merge.' for text that cannot name an architecture; nothing is run."""
    load_for_method(window, tiny, "weight_matching")
    assert window.merge_button.isEnabled()
    model_py = tmp_path / "model.py"
    model_py.write_text(MODEL_PY)
    cases = {
        str(model_py): "names a Python file but not the function",
        f"{tmp_path / 'absent.py'}:factory": "does not exist",
        "lenet": "unknown architecture 'lenet'",
        "mlp:swish": "no option 'swish'",
    }
    for text, reason in cases.items():
        window.method.arch_combo.setCurrentText(text)
        assert not window.merge_button.isEnabled(), text
        assert any(reason in b for b in window.blockers()), (text, window.blockers())
    window.method.arch_combo.setCurrentText(f"{model_py}:factory")
    assert window.merge_button.isEnabled()
    assert not (tmp_path / "model.py.ran").exists()
