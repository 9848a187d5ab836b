"""Fixtures for tests that talk to the real Redis at REDIS_URL, on a database this run claimed for itself.

A test module that uses the `mediator` fixture declares what it is made of: ``register(mediator)`` adds
the module's handlers, and a fresh instance of the module's ``Probe`` (a subclass of `BaseProbe` with the
fields its handlers record, or `BaseProbe` itself) is provided as the resource its handlers report to and
the test reads (the `probe` fixture).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from arq_mediator import Mediator, Worker, WorkerSettings
from tests.keys import Channels
from tests.redis_databases import RedisDatabases


@dataclass
class BaseProbe:
    """Per-test state the handlers report to: a waiting handler sets `started`, then waits for `release`."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def probe(request: pytest.FixtureRequest) -> BaseProbe:
    """Return a fresh `Probe` of the test's module (a `BaseProbe` when it declares none)."""
    probe_type: type[BaseProbe] = getattr(request.module, "Probe", BaseProbe)
    return probe_type()


@pytest.fixture
async def mediator(
    request: pytest.FixtureRequest, redis_url: str, probe: BaseProbe
) -> AsyncIterator[Mediator]:
    """Return an open mediator on the test database, with the module's handlers and `probe` provided."""
    register: Callable[[Mediator], None] = request.module.register
    mediator = Mediator(redis=redis_url)
    register(mediator)
    mediator.provide(probe)
    async with mediator:
        yield mediator


@pytest.fixture
def channels(redis_databases: RedisDatabases) -> Channels:
    """Return the test database's pub/sub channel names (pub/sub is server-wide: they carry its number)."""
    return Channels(db=redis_databases.number("jobs"))


@asynccontextmanager
async def running_worker(mediator: Mediator, **settings: Any) -> AsyncIterator[Worker]:
    """Run a worker of the (open) *mediator* in this event loop for the block; stop and drain it after."""
    settings.setdefault("queues", ["default"])
    async with working(Worker(mediator, WorkerSettings(**settings))) as worker:
        yield worker


W = TypeVar("W", bound=Worker)


@asynccontextmanager
async def working(worker: W) -> AsyncIterator[W]:
    """Run *worker* (built by the test, a subclass maybe) for the block; stop and drain it after."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        async with asyncio.timeout(30):
            await task
