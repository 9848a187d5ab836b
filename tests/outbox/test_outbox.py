"""The transactional outbox on PostgreSQL and SQLite: a job exists exactly when its transaction commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from arq_mediator import Durability, JobStatus, Mediator, NotReplicatedError
from arq_mediator._jobs import PendingJob
from arq_mediator.outbox import Outbox, OutboxRelay
from tests.jobs.conftest import running_worker
from tests.jobs.waiting import FAST, eventually

from .conftest import rows_in
from .outbox_app import QUEUE, Echo, Signed, table

App = tuple[Mediator, Outbox]


@asynccontextmanager
async def relaying(relay: OutboxRelay) -> AsyncIterator[OutboxRelay]:
    """Run *relay* in this event loop for the block; stop it after, re-raising what ended it early."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


@asynccontextmanager
async def worker_relaying(app: App, engine: AsyncEngine) -> AsyncIterator[OutboxRelay]:
    """Run a worker on the app's queue that also relays its outbox (polling often) for the block."""
    mediator, outbox = app
    relay = OutboxRelay(outbox, engine=engine, poll_interval=0.05)
    async with running_worker(mediator, queues=[QUEUE], relay=relay, **FAST):
        yield relay


async def test_a_rolled_back_transaction_leaves_no_job(
    app: App, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Enqueue through the outbox, then roll back: nothing is left to relay and Redis never hears of it."""
    _, outbox = app
    async with sessions() as session:
        handle = await outbox.enqueue(Echo(text="never"), session=session)
        await session.rollback()
    assert await OutboxRelay(outbox, engine=engine).relay_batch() == 0
    assert await rows_in(engine) == 0
    assert await handle.status() is JobStatus.NOT_FOUND


async def test_a_committed_job_runs_once_in_a_worker_that_relays(
    app: App, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Commit an enqueued request: a worker running the relay pushes it and runs it; the result is typed."""
    mediator, outbox = app
    async with sessions() as session, session.begin():
        handle = await outbox.enqueue(Echo(text="hello"), session=session, job_id="greeting")
    assert (handle.id, handle.queue, handle.enqueued) == ("greeting", QUEUE, True)
    async with worker_relaying(app, engine) as relay:
        assert await handle.result(timeout=20) == "HELLO"
    assert relay.relayed == 1
    assert await rows_in(engine) == 0
    assert (await mediator.stats()).totals["ready"] == 0


async def test_a_handle_awaited_before_the_commit_gets_its_result_once_the_job_is_relayed(
    app: App, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """`result()` of an outbox handle waits for a job Redis does not know yet; a rolled-back one times out."""
    _, outbox = app
    async with sessions() as session:
        handle = await outbox.enqueue(Echo(text="patient"), session=session)
        waiting = asyncio.create_task(handle.result(timeout=30))
        assert await handle.status() is JobStatus.NOT_FOUND  # nothing is in Redis before the relay
        await session.commit()
    async with sessions() as session:
        dropped = await outbox.enqueue(Echo(text="dropped"), session=session)
        await session.rollback()
    async with worker_relaying(app, engine):
        assert await waiting == "PATIENT"
        with pytest.raises(TimeoutError, match="not_found"):
            await dropped.result(timeout=0.5)
        with pytest.raises(TimeoutError):
            await dropped.result(timeout=0)


async def test_a_row_relayed_twice_adds_one_job(
    app: App, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A relay that pushed a row and died before deleting it leaves it to the next: Redis adds nothing."""
    mediator, outbox = app
    async with sessions() as session, session.begin():
        await outbox.enqueue(Echo(text="once"), session=session, job_id="once")
    assert await mediator._jobs.push([await _row_as_job(engine)]) == [(1, QUEUE, "")]  # the lost push
    assert await OutboxRelay(outbox, engine=engine).relay_batch() == 1
    assert (await mediator.stats()).totals["ready"] == 1
    assert await rows_in(engine) == 0


async def test_a_durable_relay_keeps_rows_no_replica_confirmed(
    app: App, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Durable and with no replica to confirm, a batch raises and its rows stay; relayed again, one job."""
    mediator, outbox = app
    async with sessions() as session, session.begin():
        handle = await outbox.enqueue(Echo(text="replicated"), session=session)
    durable = OutboxRelay(outbox, engine=engine, durable=Durability(replicas=1, timeout=0.05))
    with pytest.raises(NotReplicatedError):
        await durable.relay_batch()
    assert await rows_in(engine) == 1  # the deletion rolled back with the unconfirmed push
    assert durable.relayed == 0
    assert await OutboxRelay(outbox, engine=engine, durable=False).relay_batch() == 1
    assert await rows_in(engine) == 0
    assert (await mediator.stats()).totals["ready"] == 1  # pushed twice, queued once
    assert await handle.status() is JobStatus.QUEUED


async def _row_as_job(engine: AsyncEngine) -> PendingJob:
    async with engine.connect() as connection:
        row = (await connection.execute(select(table.c.job_id, table.c.queue, table.c.body))).one()
    return PendingJob(id=row.job_id, queue=row.queue, delay_ms=0, body=row.body)


async def test_a_deferred_job_keeps_the_due_time_it_was_written_with(
    app: App, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """`defer` fixes the due time at the call: relayed later, the job waits out the rest of its delay."""
    _, outbox = app
    async with sessions() as session, session.begin():
        handle = await outbox.defer(Echo(text="later"), session=session, by=timedelta(minutes=10))
    await OutboxRelay(outbox, engine=engine).relay_batch()
    assert await handle.status() is JobStatus.DEFERRED


async def test_a_notification_published_through_the_outbox_fans_out(
    app: App, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """`enqueue_publish` writes one row per handler; relayed, each handler's job runs as a plain publish's."""
    _, outbox = app
    async with sessions() as session, session.begin():
        handles = await outbox.enqueue_publish(Signed(name="ada"), session=session, job_id="signed-ada")
    assert sorted(handle.id.rpartition(".")[2] for handle in handles) == ["count", "greet"]
    async with worker_relaying(app, engine):
        for handle in handles:
            await handle.result(timeout=20)
            assert await handle.status() is JobStatus.SUCCEEDED


async def test_many_requests_commit_together(
    app: App, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """`enqueue_many` writes every request in the one transaction; a batch smaller than them takes turns."""
    _, outbox = app
    async with sessions() as session, session.begin():
        handles = await outbox.enqueue_many([Echo(text=str(n)) for n in range(7)], session=session)
    relay = OutboxRelay(outbox, engine=engine, batch_size=3)
    assert [await relay.relay_batch() for _ in range(4)] == [3, 3, 1, 0]
    assert {await handle.status() for handle in handles} == {JobStatus.QUEUED}
    with pytest.raises(ValueError, match="7 requests but 1 job ids"):
        await outbox.enqueue_many([Echo(text=str(n)) for n in range(7)], session=session, job_ids=["x"])


async def test_relayed_rows_are_kept_for_keep_sent_then_deleted(
    app: App, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """With keep_sent, a relayed row stays marked sent; a relay whose keep_sent has passed deletes it."""
    _, outbox = app
    async with sessions() as session, session.begin():
        await outbox.enqueue(Echo(text="kept"), session=session)
    assert await OutboxRelay(outbox, engine=engine, keep_sent=3600).relay_batch() == 1
    async with engine.connect() as connection:
        assert (await connection.scalar(select(table.c.sent_at))) is not None
    async with relaying(OutboxRelay(outbox, engine=engine, keep_sent=0.001, poll_interval=0.05)):
        await eventually(lambda: _no_rows(engine), timeout=10, what="the kept row deleted")


async def _no_rows(engine: AsyncEngine) -> bool:
    return await rows_in(engine) == 0


async def test_two_relays_on_one_table_never_push_a_row_twice(app: App, postgres: AsyncEngine) -> None:
    """Two relays (each its own pool) drain 600 rows at once on PostgreSQL: together they push each once."""
    mediator, outbox = app
    sessions = async_sessionmaker(postgres)
    for chunk in range(6):
        async with sessions() as session, session.begin():
            await outbox.enqueue_many([Echo(text=f"{chunk}-{n}") for n in range(100)], session=session)
    other_pool = create_async_engine(postgres.url)
    first = OutboxRelay(outbox, engine=postgres, batch_size=20)
    second = OutboxRelay(outbox, engine=other_pool, batch_size=20)
    try:
        async with relaying(first), relaying(second):
            await eventually(lambda: _no_rows(postgres), timeout=60, what="the outbox drained")
    finally:
        await other_pool.dispose()
    assert first.relayed + second.relayed == 600
    assert (await mediator.stats()).totals["ready"] == 600


async def test_the_relay_wakes_on_notify_not_on_its_poll(app: App, postgres: AsyncEngine) -> None:
    """On PostgreSQL the commit notifies: a relay that polls once a minute still relays at once."""
    _, outbox = app
    relay = OutboxRelay(outbox, engine=postgres, poll_interval=60)
    async with relaying(relay):
        await eventually(lambda: relay.listening, timeout=10, what="the relay listening")
        async with async_sessionmaker(postgres)() as session, session.begin():
            handle = await outbox.enqueue(Echo(text="now"), session=session)
        await eventually(lambda: relay.relayed == 1, timeout=15, what="the row relayed on NOTIFY")
    assert await handle.status() is JobStatus.QUEUED
