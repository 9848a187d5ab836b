"""Shared fixtures: every test gets a mediator of its own, with nothing registered."""

from __future__ import annotations

import pytest

from arq_mediator import Mediator

# The testing helper's fixtures, as a user's suite would opt into them (tests/testing uses them).
pytest_plugins = ["arq_mediator.testing.pytest"]


@pytest.fixture
def mediator() -> Mediator:
    """Return a fresh mediator with no handler, behaviour, resource or lifespan."""
    return Mediator()
