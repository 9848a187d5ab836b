"""`OutboxRelay`: move committed outbox rows to Redis in batches, woken by NOTIFY, with a fallback poll.

A batch is claimed (deleted, or marked sent, by one statement), pushed, and committed, inside one
database transaction. The rows stay locked while they are pushed, so two relays never push the same row
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite, its single write lock). A relay that dies after
the push and before the commit leaves its rows to the next relay, which pushes them again: Redis then
finds each job id taken and adds nothing, so the job id is the idempotency key that makes the hand-over
exactly-once. Behind Sentinel, a durable relay (the mediator's ``durable_enqueue`` by default) commits a
batch only once replicas hold its jobs, so a failover cannot lose a job whose row is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from .._errors import MissingResourceError
from .._jobs import PendingJob, now_ms
from .._policy import Durability, durability_of
from .._producer import count_enqueued
from .._resilience import LoopHealth
from .._telemetry import meter

if TYPE_CHECKING:
    from ._writer import Outbox

logger = logging.getLogger("arq_mediator.outbox")

relay_lag = meter.create_histogram(
    "arq_mediator.outbox.relay_lag",
    unit="s",
    description="Time from a job's outbox row being written to the job being in Redis.",
)
jobs_relayed = meter.create_counter(
    "arq_mediator.outbox.relayed", unit="{job}", description="Outbox rows pushed to Redis, by table."
)
# Rows waiting per outbox table, as this process's relays last counted them (read by the gauge below).
backlogs: dict[str, int] = {}


def _observe_backlogs(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(rows, {"arq_mediator.outbox.table": table}) for table, rows in backlogs.items()]


meter.create_observable_gauge(
    "arq_mediator.outbox.backlog",
    callbacks=[_observe_backlogs],
    unit="{job}",
    description="Outbox rows committed and not yet relayed to Redis, per table.",
)


class OutboxRelay:
    """Relay the rows of an `Outbox` to Redis until told to stop; see the module's docstring.

    Run it in workers (``WorkerSettings(relay=...)``) or on its own (`run_relay`,
    ``python -m arq_mediator relay``). The constructor only records configuration.

    Args:
        outbox: Whose table to relay, and whose mediator's Redis to push to.
        engine: The database; by default the `AsyncEngine` the mediator's lifespans provide.
        batch_size: Rows pushed per round trip (and per database transaction).
        poll_interval: Seconds between looks at the table when no NOTIFY arrives (always, on SQLite).
        keep_sent: Seconds a relayed row is kept (marked sent) before it is deleted; 0 deletes it at once.
        durable: Commit a batch only once replicas hold its jobs (``True``: one replica, see `Durability`);
            ``False`` not to; the mediator's ``durable_enqueue`` when ``None``. A batch too few replicas
            confirmed stays in the table, to be pushed again (idempotently) on the next try.

    Attributes:
        relayed: Rows this relay pushed so far (jobs added, and jobs Redis had already).
        listening: Whether NOTIFY wakes the relay now (PostgreSQL with asyncpg); else it polls.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        engine: AsyncEngine | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        keep_sent: float = 0.0,
        durable: Durability | bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if poll_interval <= 0 or keep_sent < 0:
            raise ValueError(
                "poll_interval must be positive and keep_sent zero or more; "
                f"got {poll_interval=}, {keep_sent=}"
            )
        self.outbox = outbox
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.keep_sent = keep_sent
        self.durable = durable
        self.relayed = 0
        self.listening = False
        self._engine = engine
        self._wake = asyncio.Event()

    def __repr__(self) -> str:
        return f"OutboxRelay(table={self.outbox.table.name!r}, batch_size={self.batch_size})"

    @property
    def engine(self) -> AsyncEngine:
        """Return the database engine the relay reads.

        Raises:
            MissingResourceError: none was given and the mediator provides none (is it open?).
        """
        engine = self._engine or self.outbox.mediator.resources.get(AsyncEngine)
        if not isinstance(engine, AsyncEngine):
            raise MissingResourceError(
                f"the relay of outbox table {self.outbox.table.name!r} has no database: pass "
                "OutboxRelay(engine=...), or provide one from a mediator lifespan with "
                "mediator.provide(engine, as_type=AsyncEngine)"
            )
        return engine

    async def run(self, stop: asyncio.Event) -> None:
        """Relay rows until *stop* is set; ride out any Redis or database error, logging each kind once.

        Raises:
            MissingResourceError: there is no database engine (see `engine`).
            QueueNotConnectedError: the mediator is not open.
        """
        engine = self.engine
        self.outbox.mediator._jobs  # noqa: B018 - fails now, not on every batch, when the mediator is not open
        name = self.outbox.table.name
        listener = None
        if engine.dialect.name == "postgresql":
            listener = asyncio.create_task(self._listen(engine), name=f"outbox relay {name} listener")
        logger.info("outbox relay of table %s started (%s)", name, engine.dialect.name)
        health = LoopHealth(logger, f"outbox relay of table {name}")
        clock = asyncio.get_running_loop().time
        tidy_at = clock()  # count the backlog (and purge kept rows) at start, then once per poll interval
        try:
            while not stop.is_set():
                self._wake.clear()  # before the batch: a NOTIFY arriving meanwhile asks for another
                try:
                    if health.failures:  # Redis or the database failed: take no lock until Redis answers
                        await self.outbox.mediator.ping()
                    moved = await self.relay_batch(engine)
                    if clock() >= tidy_at:
                        await self._tidy(engine)
                        tidy_at = clock() + self.poll_interval
                except Exception as error:  # any Redis or database error: back off and go on
                    await _first_of(stop, None, health.failed(error))
                    continue
                health.succeeded()
                if moved < self.batch_size:
                    await _first_of(stop, self._wake, self.poll_interval)
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            logger.info("outbox relay of table %s stopped: %d row(s) relayed", name, self.relayed)

    async def relay_batch(self, engine: AsyncEngine | None = None) -> int:
        """Push one batch of committed rows to Redis and delete (or mark) them; return how many.

        Raises:
            RedisError, OSError, SQLAlchemyError: the batch did not go through; its rows stay for later.
            NotReplicatedError: a durable relay's batch reached too few replicas; its rows stay for later.
        """
        table = self.outbox.table
        batch = (
            select(table.c.position)
            .where(table.c.sent_at.is_(None))
            .order_by(table.c.position)
            .limit(self.batch_size)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        columns = (table.c.position, table.c.job_id, table.c.queue, table.c.body, table.c.due_at)
        claimed = table.c.position.in_(batch)
        async with (engine or self.engine).begin() as connection:
            # One statement claims the batch: its rows are deleted (or marked sent) at once, and back as
            # they were if the push fails or the relay dies before the commit. On SQLite, a statement that
            # writes takes the database's write lock, so a second relay waits here for this one's commit.
            if self.keep_sent:
                marked = update(table).where(claimed).values(sent_at=now_ms())
                result = await connection.execute(marked.returning(*columns, table.c.created_at))
            else:
                result = await connection.execute(
                    delete(table).where(claimed).returning(*columns, table.c.created_at)
                )
            rows = sorted(result.all(), key=lambda row: row.position)
            if not rows:
                return 0
            now = now_ms()
            jobs = [
                PendingJob(id=row.job_id, queue=row.queue, delay_ms=max(row.due_at - now, 0), body=row.body)
                for row in rows
            ]
            # Pushed before the rows' deletion commits: too few replicas raises here and rolls it back.
            mediator = self.outbox.mediator
            outcomes = await mediator._jobs.push(jobs, durability_of(self.durable, mediator.durable_enqueue))
        done = now_ms()
        count_enqueued(jobs, outcomes)
        for row in rows:
            relay_lag.record(max(done - row.created_at, 0) / 1000, {"messaging.destination.name": row.queue})
        jobs_relayed.add(len(rows), {"arq_mediator.outbox.table": table.name})
        self.relayed += len(rows)
        return len(rows)

    async def _tidy(self, engine: AsyncEngine) -> None:
        """Delete kept rows older than ``keep_sent``, and count the backlog for the gauge."""
        table = self.outbox.table
        async with engine.begin() as connection:
            if self.keep_sent:
                cutoff = now_ms() - int(self.keep_sent * 1000)
                await connection.execute(delete(table).where(table.c.sent_at < cutoff))
            backlog = await connection.scalar(
                select(func.count()).select_from(table).where(table.c.sent_at.is_(None))
            )
        backlogs[table.name] = int(backlog or 0)

    async def _listen(self, engine: AsyncEngine) -> None:
        """Hold a connection that LISTENs on the table's channel, waking the relay on each NOTIFY."""
        channel = self.outbox.table.name
        health = LoopHealth(logger, f"outbox relay of table {channel} listening for NOTIFY")
        while True:
            try:
                async with engine.connect() as connection:
                    driver: Any = (await connection.get_raw_connection()).driver_connection
                    if not hasattr(driver, "add_listener"):
                        logger.info(
                            "the %s driver cannot LISTEN: the outbox relay of table %s polls every %.1fs",
                            engine.dialect.driver,
                            channel,
                            self.poll_interval,
                        )
                        return
                    try:
                        await self._hold_listener(driver, channel, health)
                    finally:
                        if (
                            driver.is_closed()
                        ):  # ended under it: drop it, rather than give it back to the pool
                            await connection.invalidate()
            except Exception as error:
                await asyncio.sleep(health.failed(error))

    async def _hold_listener(self, driver: Any, channel: str, health: LoopHealth) -> None:
        """LISTEN on *driver* (an asyncpg connection) until it closes; then raise, to listen again."""
        closed = asyncio.Event()
        await driver.add_listener(channel, self._notified)
        driver.add_termination_listener(lambda _: closed.set())
        self.listening = True
        health.succeeded()
        self._wake.set()  # rows may have been committed while nobody listened
        try:
            while not closed.is_set() and not driver.is_closed():
                await _first_of(closed, None, self.poll_interval)
        finally:
            self.listening = False
            with contextlib.suppress(Exception):
                await driver.remove_listener(channel, self._notified)
        raise ConnectionError("the connection listening for NOTIFY closed")

    def _notified(self, *_: object) -> None:
        self._wake.set()


async def _first_of(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> bool:
    """Wait up to *timeout* seconds for *stop* or *wake*; return whether one was set."""
    waits = [asyncio.ensure_future(event.wait()) for event in (stop, wake) if event is not None]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    return bool(done)


async def run_relay(relay: OutboxRelay, *, handle_signals: bool = True) -> OutboxRelay:
    """Open the relay's mediator and relay until SIGTERM or SIGINT; return the stopped relay.

    For a relay in a process of its own (``python -m arq_mediator relay``); workers run theirs with
    ``WorkerSettings(relay=...)``.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with relay.outbox.mediator:
            await relay.run(stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return relay
