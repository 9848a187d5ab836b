"""Shared fixtures: every test gets a mediator of its own, with nothing registered; Redis and PostgreSQL
come from containers for a session where none is configured or answers (`tests/containers.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from arq_mediator import Mediator
from tests import containers


def pytest_report_header() -> str:
    """Say once, at the top of the run, whether the container tests can run here, and if not, why."""
    reason = containers.unavailable_reason()
    return "containers: a Docker daemon answers" if reason is None else f"containers: UNAVAILABLE, {reason}"


@pytest.fixture(scope="session", autouse=True)
def backing_services() -> Iterator[dict[str, str]]:
    """Point REDIS_URL / DATABASE_URL at containers started for the session when unset and nothing answers
    on the default ports; return what was set."""
    with containers.backing_services() as found, pytest.MonkeyPatch.context() as patch:
        for variable, url in found.items():
            patch.setenv(variable, url)
        yield found


# The testing helper's fixtures, as a user's suite would opt into them (tests/testing uses them).
pytest_plugins = ["arq_mediator.testing.pytest"]


@pytest.fixture
def mediator() -> Mediator:
    """Return a fresh mediator with no handler, behaviour, resource or lifespan."""
    return Mediator()
