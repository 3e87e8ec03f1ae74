"""Fixtures for the CLI tests: the real demo models, made once per session."""

from __future__ import annotations

import pytest

from core.demo import DemoSet, make_demo


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> DemoSet:
    return make_demo(tmp_path_factory.mktemp("demo"))
