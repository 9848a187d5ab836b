"""Relays ride out Redis outages and database errors; a relay process killed mid-batch loses nothing."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from arq_mediator.outbox import Outbox, OutboxRelay
from tests.conftest import StartRedisServer
from tests.jobs.waiting import eventually
from tests.processes import ManagedProcesses

from . import outbox_app
from .conftest import fresh_table, rows_in
from .outbox_app import QUEUE, Echo, build, metadata
from .test_outbox import App, relaying

ROWS = 1000


async def _commit(
    outbox: Outbox, sessions: async_sessionmaker[AsyncSession], count: int, prefix: str
) -> list[str]:
    """Commit *count* Echo jobs through *outbox* in transactions of 100; return their job ids."""
    ids = []
    for start in range(0, count, 100):
        async with sessions() as session, session.begin():
            batch = [f"{prefix}-{n}" for n in range(start, min(start + 100, count))]
            await outbox.enqueue_many([Echo(text=job_id) for job_id in batch], session=session, job_ids=batch)
            ids += batch
    return ids


async def _queued(redis_url: str) -> list[str]:
    client: Redis = Redis.from_url(redis_url)
    try:
        return [member.decode() for member in await client.zrange(f"arq:queue:{QUEUE}", 0, -1)]
    finally:
        await client.aclose()


async def test_the_relay_waits_out_a_redis_outage_and_says_when_it_works_again(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    redis_servers: StartRedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis stopped: rows wait, one warning is logged. Redis back: every row arrives; the relay says so."""
    redis_server = await redis_servers()
    mediator, outbox = build(redis_server.url)
    caplog.set_level(logging.WARNING, "arq_mediator.outbox")
    async with mediator:
        redis_server.stop()
        relay = OutboxRelay(outbox, engine=engine, poll_interval=0.05)
        async with relaying(relay):
            ids = await _commit(outbox, sessions, 20, "outage")
            await eventually(lambda: "failed" in caplog.text, timeout=15, what="the outage logged")
            await eventually(lambda: relay.relayed == 0, timeout=1)
            redis_server.start()
            await redis_server.ready()
            await eventually(
                lambda: relay.relayed == 20, timeout=30, what="the rows relayed after the outage"
            )
    warnings = [record.getMessage() for record in caplog.records if record.name == "arq_mediator.outbox"]
    assert sum("failed (" in message for message in warnings) == 1, warnings
    assert any("works again" in message for message in warnings), warnings
    assert sorted(await _queued(redis_server.url)) == sorted(ids)
    assert await rows_in(engine) == 0


async def test_the_relay_rides_out_a_database_error(
    app: App,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With its table gone the relay logs the error and keeps trying; once the table is back it relays."""
    relay = OutboxRelay(app[1], engine=engine, poll_interval=0.05)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.drop_all)
    caplog.set_level(logging.WARNING, "arq_mediator.outbox")
    async with relaying(relay):
        await eventually(lambda: "failed" in caplog.text, timeout=15, what="the database error logged")
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        await _commit(app[1], sessions, 3, "after")
        await eventually(
            lambda: relay.relayed == 3, timeout=30, what="the rows relayed once the table is back"
        )
    assert "works again" in caplog.text


async def test_a_relay_process_killed_mid_batch_leaves_every_row_in_redis_exactly_once(
    app: App, postgres: AsyncEngine, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL a relay process between pushing a batch and deleting it; a new relay pushes each job once."""
    sessions = async_sessionmaker(postgres)
    ids = await _commit(app[1], sessions, ROWS, "kill")
    # Each batch's COMMIT waits a while (a deferred trigger runs at the commit, after the push), so the
    # relay spends most of its time pushed-but-not-committed.
    async with postgres.begin() as connection:
        await connection.execute(
            text(
                "CREATE FUNCTION slow_outbox_delete() RETURNS trigger AS "
                "$$ BEGIN PERFORM pg_sleep(0.01); RETURN NULL; END $$ LANGUAGE plpgsql"
            )
        )
        await connection.execute(
            text(
                f"CREATE CONSTRAINT TRIGGER slow_delete AFTER DELETE ON {outbox_app.TABLE} "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_outbox_delete()"
            )
        )
    processes = ManagedProcesses(tmp_path)
    environment = {**os.environ, outbox_app.URL_ENV: redis_url, "PYTHONUNBUFFERED": "1"}
    command = [
        "-m",
        "arq_mediator",
        "relay",
        "tests.outbox.outbox_app:outbox",
        "--database-url",
        postgres_url,
    ]
    command += ["--batch-size", "50"]
    try:
        first = processes.start("relay-1", command, environment)
        await eventually(lambda: _at_least_in_redis(redis_url, 100), timeout=30, what="a few batches pushed")
        first.process.send_signal(signal.SIGKILL)
        await first.exited(10)
        in_redis, left = len(await _queued(redis_url)), await rows_in(postgres)
        assert in_redis + left > ROWS, "the kill did not land between a push and its commit"
        async with postgres.begin() as connection:
            await connection.execute(text(f"DROP TRIGGER slow_delete ON {outbox_app.TABLE}"))
            await connection.execute(text("DROP FUNCTION slow_outbox_delete()"))
        second = processes.start("relay-2", command, environment)
        await eventually(lambda: _drained(postgres), timeout=60, what="the outbox drained by the new relay")
        assert await second.stop() == 0
    finally:
        processes.stop_all()
    queued = await _queued(redis_url)
    assert sorted(queued) == sorted(ids), processes.logs()
    client: Redis = Redis.from_url(redis_url)
    try:
        bodies = await client.mget([f"arq:job:{job_id}" for job_id in ids])
    finally:
        await client.aclose()
    assert all(body is not None for body in bodies)


async def _at_least_in_redis(redis_url: str, count: int) -> bool:
    return len(await _queued(redis_url)) >= count


async def _drained(engine: AsyncEngine) -> bool:
    return await rows_in(engine) == 0


async def test_two_relays_on_one_sqlite_file_take_turns(redis_url: str, tmp_path: Path) -> None:
    """On SQLite the relays serialize on the write lock: three at once push each row once, with no errors."""
    async with fresh_table(f"sqlite+aiosqlite:///{tmp_path}/shared.db") as engine:
        mediator, outbox = build(redis_url)
        async with mediator:
            ids = await _commit(outbox, async_sessionmaker(engine), 300, "sqlite")
            relays = [OutboxRelay(outbox, engine=engine, batch_size=25, poll_interval=0.05) for _ in range(3)]
            async with relaying(relays[0]), relaying(relays[1]), relaying(relays[2]):
                await eventually(lambda: _drained(engine), timeout=60, what="the outbox drained")
        assert sum(relay.relayed for relay in relays) == 300
    assert sorted(await _queued(redis_url)) == sorted(ids)


async def test_a_relay_whose_listening_connection_is_killed_listens_again(
    app: App, postgres: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL ends the LISTEN connection: the relay logs it and listens again; NOTIFY wakes it again."""
    _, outbox = app
    relay = OutboxRelay(outbox, engine=postgres, poll_interval=60)  # only a NOTIFY can wake it in time
    caplog.set_level(logging.WARNING, "arq_mediator.outbox")
    async with relaying(relay):
        await eventually(lambda: relay.listening, timeout=10, what="the relay listening")
        async with postgres.connect() as connection:
            ended = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
                )
            )
        assert ended >= 1
        await eventually(lambda: "NOTIFY works again" in caplog.text, timeout=20, what="the listener back")
        await eventually(lambda: relay.listening, timeout=10, what="the relay listening again")
        async with async_sessionmaker(postgres)() as session, session.begin():
            await outbox.enqueue(Echo(text="after"), session=session)
        await eventually(lambda: relay.relayed == 1, timeout=15, what="the row relayed on NOTIFY")
    assert "listening for NOTIFY failed" in caplog.text
