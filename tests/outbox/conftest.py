"""Fixtures of the outbox tests: the outbox table on PostgreSQL (a database of the run's own) or SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from arq_mediator import Mediator
from arq_mediator.outbox import Outbox

from . import outbox_app


@asynccontextmanager
async def fresh_table(url: str) -> AsyncIterator[AsyncEngine]:
    """Yield an engine on *url* with an empty outbox table; drop the table and close the engine after."""
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(outbox_app.metadata.drop_all)
        await connection.run_sync(outbox_app.metadata.create_all)
    try:
        yield engine
    finally:
        async with engine.begin() as connection:
            await connection.run_sync(outbox_app.metadata.drop_all)
        await engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return the URL of the run's PostgreSQL database, or of a SQLite file of the test's own."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Return an engine on PostgreSQL or SQLite with an empty outbox table, dropped after the test."""
    async with fresh_table(database_url) as engine:
        yield engine


@pytest.fixture
async def postgres(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """Return an engine on PostgreSQL only, with an empty outbox table, dropped after the test."""
    async with fresh_table(postgres_url) as engine:
        yield engine


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Return a session factory of the test's database."""
    return async_sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
async def app(redis_url: str) -> AsyncIterator[tuple[Mediator, Outbox]]:
    """Return the test app's mediator, open on the test's Redis database, and its outbox."""
    mediator, outbox = outbox_app.build(redis_url)
    async with mediator:
        yield mediator, outbox


async def rows_in(engine: AsyncEngine) -> int:
    """Return how many rows the outbox table holds, relayed or not."""
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(outbox_app.table)) or 0)
