"""App data: the SQLAlchemy async engine, sessions, and an idempotent schema set-up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from arq_mediator import Mediator
from arq_mediator.outbox import outbox_table
from services.telemetry import instrument_engine

SessionFactory = async_sessionmaker[AsyncSession]
# Any fixed number: every process creating the schema takes this PostgreSQL advisory lock first.
_SCHEMA_LOCK = 0x61726D71


class Base(DeclarativeBase):
    """Base of the demo's tables."""


# Jobs written in the same transaction as the data they follow from (a new user's fan-out); the workers
# relay them to Redis.
OUTBOX = outbox_table(Base.metadata)


def create_engine(database_url: str) -> AsyncEngine:
    """Return an engine for *database_url*, creating the folder of a SQLite file when needed."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # A generous busy timeout: four processes share one SQLite file in the local stack.
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(url, pool_pre_ping=True)


async def create_schema(engine: AsyncEngine) -> None:
    """Create missing tables; safe when several processes start at once."""
    for attempt in range(3):
        try:
            async with engine.begin() as connection:
                if engine.dialect.name == "postgresql":
                    # Serializes the look-then-create of concurrent starters; released at commit.
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK}
                    )
                await connection.run_sync(Base.metadata.create_all)
            return
        except OperationalError as error:
            # SQLite has no advisory lock: a process that lost the race finds the table made meanwhile,
            # and the next look sees it.
            if "already exists" not in str(error) or attempt == 2:
                raise


def database_lifespan(database_url: str) -> Callable[[Mediator], AsyncIterator[None]]:
    """Return a mediator lifespan that opens the engine, creates the schema and provides a session factory."""

    async def lifespan(mediator: Mediator) -> AsyncIterator[None]:
        engine = create_engine(database_url)
        instrument_engine(engine)
        try:
            await create_schema(engine)
            mediator.provide(engine, as_type=AsyncEngine)
            mediator.provide(async_sessionmaker(engine, expire_on_commit=False), as_type=async_sessionmaker)
            yield
        finally:
            await engine.dispose()

    return lifespan
