"""Fixtures running each test of the testing helper in both modes: in memory, and real workers on Redis.

The Redis mode uses a database of its own (claimed for this run, or ARQM_TESTING_REDIS_DB), flushed before
and after each test, so it never meets the databases other test folders use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from arq_mediator import Mediator
from arq_mediator.testing import drain, local_queue, running_worker
from tests.redis_databases import FlushedRedis

# The queues the tests' handlers use, in the priority order the Redis mode's worker serves them.
QUEUES = ["critical", "default", "emails"]


@pytest.fixture
async def redis_url(flushed_redis: FlushedRedis) -> str:
    """Return the URL of the testing helper's database, flushed before and after the test."""
    return await flushed_redis("testing")


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
async def jobs(request: pytest.FixtureRequest, flushed_redis: FlushedRedis) -> AsyncIterator[Jobs]:
    """Return a fresh mediator's job runner in memory, then again with a real worker on Redis."""
    mode: str = request.param
    async with AsyncExitStack() as stack:
        if mode == "redis":
            url = await flushed_redis("testing")
            mediator = await stack.enter_async_context(Mediator(redis=url))
        else:
            mediator = Mediator()
        yield Jobs(mode, mediator, stack)
