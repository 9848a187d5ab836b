"""Pytest fixtures for tests of arq-mediator handlers, in a plugin a test suite opts into.

Opt in from the top-level conftest.py with ``pytest_plugins = ["arq_mediator.testing.pytest"]``.

Needs pytest-asyncio (either mode). Each fixture is a factory, since only the test knows its mediator:

    async def test_charge(local_queue_for):
        queue = await local_queue_for(mediator)
        job = await mediator.enqueue(Charge(cents=100))
        await queue.run_all()
        assert await job.result() == Receipt(cents=100)

What a factory opens is closed when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Protocol

import pytest_asyncio

from ._local import LocalQueue, local_queue
from ._workers import running_worker

if TYPE_CHECKING:
    from .._mediator import Mediator
    from .._worker import Worker


class LocalQueueFactory(Protocol):
    """Put a mediator's jobs on in-memory queues for the rest of the test (see `local_queue`)."""

    async def __call__(
        self,
        mediator: Mediator,
        *,
        queues: Sequence[str] | None = None,
        max_jobs: int = 1,
        retry_delay: float | None = None,
    ) -> LocalQueue: ...


class WorkerFactory(Protocol):
    """Run a real worker of a mediator on Redis for the rest of the test (see `running_worker`)."""

    async def __call__(
        self,
        mediator: Mediator,
        queues: Sequence[str] | None = None,
        *,
        retry_delay: float | None = None,
        **settings: Any,
    ) -> Worker: ...


@pytest_asyncio.fixture
async def local_queue_for() -> AsyncIterator[LocalQueueFactory]:
    """Return a factory that gives a mediator in-memory queues until the test ends."""
    async with AsyncExitStack() as stack:

        async def open_queue(
            mediator: Mediator,
            *,
            queues: Sequence[str] | None = None,
            max_jobs: int = 1,
            retry_delay: float | None = None,
        ) -> LocalQueue:
            opened = local_queue(mediator, queues=queues, max_jobs=max_jobs, retry_delay=retry_delay)
            return await stack.enter_async_context(opened)

        yield open_queue


@pytest_asyncio.fixture
async def running_worker_for() -> AsyncIterator[WorkerFactory]:
    """Return a factory that runs a real worker of a mediator until the test ends, then drains it."""
    async with AsyncExitStack() as stack:

        async def start_worker(
            mediator: Mediator,
            queues: Sequence[str] | None = None,
            *,
            retry_delay: float | None = None,
            **settings: Any,
        ) -> Worker:
            started = running_worker(mediator, queues, retry_delay=retry_delay, **settings)
            return await stack.enter_async_context(started)

        yield start_worker
