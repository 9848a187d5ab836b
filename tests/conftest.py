"""Shared fixtures: every test gets a mediator of its own, with nothing registered; Redis and PostgreSQL
come from containers for a session where none is configured or answers (`tests/containers.py`); tests that
use Redis work in databases this run claimed for itself (`tests/redis_databases.py`), flushed around each."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from redis.asyncio import Redis

from arq_mediator import Mediator
from tests import containers
from tests.jobs.worker_processes import RedisServer
from tests.processes import ManagedProcesses
from tests.redis_databases import (
    DatabasesUnavailableError,
    FlushedRedis,
    RedisDatabases,
    Role,
    server_url,
)


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


# The testing helper's fixtures, as a user's suite would opt into them (tests/testing uses them).
pytest_plugins = ["arq_mediator.testing.pytest"]


@pytest.fixture
def mediator() -> Mediator:
    """Return a fresh mediator with no handler, behaviour, resource or lifespan."""
    return Mediator()


@pytest.fixture(scope="session")
def redis_databases(backing_services: dict[str, str]) -> Iterator[RedisDatabases]:
    """Return this run's Redis databases, claimed when a test first needs one and released at the end."""
    databases = RedisDatabases(server_url())  # read now: backing_services may have just set REDIS_URL
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
async def flushed_redis(redis_databases: RedisDatabases) -> AsyncIterator[FlushedRedis]:
    """Return a factory of flushed databases (see `FlushedRedis`); what it opens is closed after the test."""
    async with AsyncExitStack() as stack:

        async def flushed(role: Role = "jobs") -> str:
            try:
                url = redis_databases.url(role)
            except DatabasesUnavailableError as error:
                pytest.exit(str(error))  # every test after this one would say the same
            client: Redis = Redis.from_url(url)
            stack.push_async_callback(client.aclose)
            await client.flushdb()
            stack.push_async_callback(client.flushdb)
            return url

        yield flushed


@pytest.fixture
async def redis_url(flushed_redis: FlushedRedis) -> str:
    """Return the URL of the jobs tests' database, flushed before and after the test."""
    return await flushed_redis("jobs")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """Return a client of the test database, closed after the test."""
    client: Redis = Redis.from_url(redis_url)
    yield client
    await client.aclose()


class StartRedisServer(Protocol):
    """Start a redis-server of the test's own with *options* (``"--databases", "4"``); return it answering."""

    async def __call__(self, *options: str) -> RedisServer: ...


@pytest.fixture
async def redis_servers(tmp_path: Path) -> AsyncIterator[StartRedisServer]:
    """Return a factory of private redis-servers (never the shared one); each is stopped when the test ends.

    For what the shared server cannot give a test alone: an outage, a stall, its server-wide statistics.
    """
    started: list[RedisServer] = []

    async def start(*options: str) -> RedisServer:
        directory = tmp_path / f"redis-{len(started)}"
        directory.mkdir()
        server = RedisServer(directory, options=options)
        started.append(server)
        server.start()
        await server.ready()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ManagedProcesses]:
    """Start processes for the test; every one is stopped by PID when the test ends, however it ends."""
    started = ManagedProcesses(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
