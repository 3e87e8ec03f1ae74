"""`make_demo`: progress through its trainings, Cancel within one, and a cancelled
demo's files remade by the next call (they are its own, not someone's to protect)."""

from __future__ import annotations

import json

import pytest

from core.demo import make_demo
from core.errors import Cancelled
from core.jobs import Progress


def test_a_cancelled_demo_is_remade_next_time(tmp_path):
    folder = tmp_path / "demo"
    seen = []

    def on_event(event):
        seen.append(event.message)
        if event.done == 2:  # the base and one fine-tune are written
            progress.cancel()

    progress = Progress(on_event, min_interval=0)
    with pytest.raises(Cancelled):
        make_demo(folder, progress=progress)
    assert seen[:3] == [
        "training the base model",
        "fine-tuning on digits 0-4",
        "fine-tuning on digits 5-9",
    ]
    assert (folder / "base.safetensors").exists()
    assert json.loads((folder / "demo.json").read_text()) == {"version": "incomplete"}
    events = []
    demo = make_demo(folder, progress=Progress(events.append, min_interval=0))
    assert [e.done for e in events] == list(range(7))
    assert all(p.exists() for p in (demo.base, *demo.models.values(), *demo.seeds, demo.data))
    assert json.loads((folder / "demo.json").read_text())["version"] != "incomplete"
