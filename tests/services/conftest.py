"""Fixtures for the demo services: a PostgreSQL database of their own (`postgres_url`, in tests/conftest.py)
and a Redis database of their own (claimed for this run, see `tests/redis_databases.py`)."""

from __future__ import annotations

import pytest
from services.settings import Settings

from tests.redis_databases import FlushedRedis
from tests.services.api_harness import empty_outbox


@pytest.fixture
async def clean_redis(flushed_redis: FlushedRedis) -> str:
    """Return the services' Redis URL, with its database flushed before and after the test."""
    return await flushed_redis("services")


@pytest.fixture
async def settings(postgres_url: str, clean_redis: str) -> Settings:
    """Return settings on the test Redis and PostgreSQL, with the demo's work durations cut to nothing.

    The run's tests share the database: outbox rows an earlier test committed and never relayed (it ran
    no worker) are deleted, or this test's relay would put their jobs in this test's Redis.
    """
    await empty_outbox(postgres_url)
    return Settings(
        redis_url=clean_redis,
        database_url=postgres_url,
        work_scale=0.0,
        email_failure_rate=0.0,
        service_name="api",
    )
