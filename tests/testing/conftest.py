"""Fixtures running each test of the testing helper in both modes: in memory, and real workers on Redis.

The Redis mode uses a database of its own (ARQM_TESTING_REDIS_DB, 9 by default), flushed before and after
each test, so it never meets the databases other test folders use.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from redis.asyncio import Redis

from arq_mediator import Mediator
from arq_mediator.testing import drain, local_queue, running_worker
from tests.jobs.conftest import redis_url_for

TESTING_DB = int(os.environ.get("ARQM_TESTING_REDIS_DB", "9"))
# The queues the tests' handlers use, in the priority order the Redis mode's worker serves them.
QUEUES = ["critical", "default", "emails"]


@asynccontextmanager
async def flushed_database() -> AsyncIterator[str]:
    """Empty the testing helper's database before and after the block; yield its URL."""
    url = redis_url_for(TESTING_DB)
    client: Redis = Redis.from_url(url)
    await client.flushdb()
    try:
        yield url
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """Return the URL of the testing helper's database, flushed before and after the test."""
    async with flushed_database() as url:
        yield url


class Jobs:
    """Where a test's jobs run: `start` them (a local queue, or a worker on Redis), then `drain`."""

    def __init__(self, mode: str, mediator: Mediator, stack: AsyncExitStack) -> None:
        self.mode = mode
        self.mediator = mediator
        self._stack = stack

    async def start(self, *, retry_delay: float | None = 0.0) -> None:
        """Start running jobs, with retries at once unless *retry_delay* says otherwise."""
        if self.mode == "local":
            await self._stack.enter_async_context(local_queue(self.mediator, retry_delay=retry_delay))
        else:
            worker = running_worker(self.mediator, QUEUES, retry_delay=retry_delay, max_jobs=5)
            await self._stack.enter_async_context(worker)

    async def drain(self) -> None:
        """Run (locally) or wait for (on Redis) every job, follow-ups and retries included."""
        await drain(self.mediator, timeout=10)


@pytest.fixture(params=["local", "redis"])
async def jobs(request: pytest.FixtureRequest) -> AsyncIterator[Jobs]:
    """Return a fresh mediator's job runner in memory, then again with a real worker on Redis."""
    mode: str = request.param
    async with AsyncExitStack() as stack:
        if mode == "redis":
            url = await stack.enter_async_context(flushed_database())
            mediator = await stack.enter_async_context(Mediator(redis=url))
        else:
            mediator = Mediator()
        yield Jobs(mode, mediator, stack)
