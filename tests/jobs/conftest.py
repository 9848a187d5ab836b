"""Fixtures for tests that talk to the real Redis at REDIS_URL, on a database number of their own."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis

from arq_mediator import Mediator, Worker, WorkerSettings
from tests.keys import Channels

# Tests own this database and flush it before and after each test; the default (0) is never touched.
TEST_DB = int(os.environ.get("ARQM_TEST_REDIS_DB", "13"))
# Pub/sub is server-wide, so the library names its channels after the database: these are the tests'.
CHANNELS = Channels(db=TEST_DB)


def redis_url_for(db: int) -> str:
    """Return REDIS_URL (default redis://127.0.0.1:6379) pointed at database *db*."""
    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """Return the URL of the test database, flushed before and after the test."""
    url = redis_url_for(TEST_DB)
    client: Redis = Redis.from_url(url)
    await client.flushdb()
    yield url
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """Return a client of the test database, closed after the test."""
    client: Redis = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@asynccontextmanager
async def running_worker(mediator: Mediator, **settings: Any) -> AsyncIterator[Worker]:
    """Run a worker of the (open) *mediator* in this event loop for the block; stop and drain it after."""
    settings.setdefault("queues", ["default"])
    worker = Worker(mediator, WorkerSettings(**settings))
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        async with asyncio.timeout(30):
            await task
