"""Fixtures for the reliability suite: the corpus and its outcomes, built once."""

from __future__ import annotations

import pytest
from reliability_session import all_outcomes, corpus_cases, good_model


@pytest.fixture(scope="session")
def outcomes():
    return all_outcomes()


@pytest.fixture(scope="session")
def cases():
    return corpus_cases()


@pytest.fixture(scope="session")
def good():
    return good_model()
