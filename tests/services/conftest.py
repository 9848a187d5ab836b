"""Fixtures for the demo services: a PostgreSQL database of their own and a Redis database of their own
(claimed for this run, see `tests/redis_databases.py`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from services.settings import Settings

from tests.processes import ManagedProcesses
from tests.redis_databases import FlushedRedis

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://"))
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(("postgresql", parts.netloc, path, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Create a throwaway PostgreSQL database for this test session; drop it at the end.

    Returns its SQLAlchemy URL (``postgresql+asyncpg://...``).
    """
    import asyncio

    name = f"arqm_test_{uuid.uuid4().hex[:10]}"
    # Read now, not at import: the session's containers (tests/conftest.py) may have set it since.
    admin_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    admin = _asyncpg_dsn(admin_url)

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield _asyncpg_dsn(admin_url, name).replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def clean_redis(flushed_redis: FlushedRedis) -> str:
    """Return the services' Redis URL, with its database flushed before and after the test."""
    return await flushed_redis("services")


@pytest.fixture
async def settings(postgres_url: str, clean_redis: str) -> Settings:
    """Return settings on the test Redis and PostgreSQL, with the demo's work durations cut to nothing."""
    return Settings(
        redis_url=clean_redis,
        database_url=postgres_url,
        work_scale=0.0,
        email_failure_rate=0.0,
        service_name="api",
    )


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ManagedProcesses]:
    """Start service processes for the test; every one is stopped by PID when it ends, however it ends."""
    started = ManagedProcesses(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
