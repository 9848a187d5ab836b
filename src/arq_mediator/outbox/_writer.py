"""`Outbox`: enqueue, defer and publish as rows of the caller's database transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import func, insert, select

from .._handle import JobHandle
from .._job_builder import delay_ms_of
from .._jobs import PendingJob, now_ms
from .._messages import Notification, Request
from .._telemetry import record_failure

if TYPE_CHECKING:
    from opentelemetry.trace import Span
    from sqlalchemy import Table
    from sqlalchemy.ext.asyncio import AsyncSession

    from .._mediator import Mediator

R = TypeVar("R")


class Outbox:
    """Write jobs into the caller's SQLAlchemy transaction; an `OutboxRelay` moves them to Redis after commit.

    A rolled-back transaction leaves no job; a committed one gives exactly one job, even when Redis is
    down at the time (the relay pushes it when Redis is back). Nothing here commits, and nothing here
    talks to Redis: the mediator need only be open. The handles returned say ``enqueued=True``: the job
    is accepted, and reaches its queue when the transaction commits and the relay runs. Their ``result()``
    waits meanwhile; their ``status()`` is ``NOT_FOUND`` until the relay has pushed the job.

    Args:
        mediator: Prepares the jobs (handler, policy, envelope, trace context) and gives their handles.
        table: The table from `outbox_table`, in the application's metadata.
    """

    def __init__(self, mediator: Mediator, table: Table) -> None:
        self.mediator = mediator
        self.table = table

    def __repr__(self) -> str:
        return f"Outbox(table={self.table.name!r})"

    async def enqueue(
        self,
        request: Request[R],
        *,
        session: AsyncSession,
        queue: str | None = None,
        job_id: str | None = None,
        max_tries: int | None = None,
    ) -> JobHandle[R]:
        """Queue *request* to run in a worker once *session*'s transaction commits; return its handle now.

        The handle's id is fixed here, so it can be handed out before the commit. Options are
        `Mediator.enqueue`'s; a *job_id* that names a job already in Redis when the row is relayed adds
        nothing, as there.

        Raises:
            NoHandlerError: the request's type has no handler (nothing is written).
            QueueNotConnectedError: the mediator is not open (handles need its Redis client, not Redis).
        """
        [handle] = await self._write_requests([request], session, queue, [job_id], max_tries, 0)
        return handle

    async def defer(
        self,
        request: Request[R],
        *,
        session: AsyncSession,
        by: timedelta | float | None = None,
        at: datetime | None = None,
        queue: str | None = None,
        job_id: str | None = None,
        max_tries: int | None = None,
    ) -> JobHandle[R]:
        """Queue *request* to run later, *by* a delay or *at* an aware datetime, once the transaction commits.

        The due time is fixed now: a job deferred by a minute starts a minute after this call, however
        long the commit or the relay takes (at once if that time has passed).

        Raises:
            ValueError: both or neither of *by* and *at*, a negative delay, or a naive *at*.
        """
        delay_ms = delay_ms_of(by, at, required=True)
        [handle] = await self._write_requests([request], session, queue, [job_id], max_tries, delay_ms)
        return handle

    async def enqueue_many(
        self,
        requests: Sequence[Request[R]],
        *,
        session: AsyncSession,
        queue: str | None = None,
        job_ids: Sequence[str | None] | None = None,
        max_tries: int | None = None,
        by: timedelta | float | None = None,
        at: datetime | None = None,
    ) -> list[JobHandle[R]]:
        """Queue many requests with one insert into the transaction; return their handles in order.

        The options are `Mediator.enqueue_many`'s.
        """
        ids = list(job_ids) if job_ids is not None else [None] * len(requests)
        if len(ids) != len(requests):
            raise ValueError(f"enqueue_many got {len(requests)} requests but {len(ids)} job ids")
        return await self._write_requests(requests, session, queue, ids, max_tries, delay_ms_of(by, at))

    async def enqueue_publish(
        self,
        notification: Notification,
        *,
        session: AsyncSession,
        queue: str | None = None,
        job_id: str | None = None,
        max_tries: int | None = None,
        by: timedelta | float | None = None,
        at: datetime | None = None,
    ) -> list[JobHandle[None]]:
        """Publish *notification* in the background once the transaction commits: one job per handler.

        The options are `Mediator.enqueue_publish`'s.
        """
        client = self.mediator._jobs  # raises before anything is written when the mediator is not open
        jobs = self.mediator._prepare_publish(notification, queue, job_id, max_tries, delay_ms_of(by, at))
        await self._write(session, jobs)
        return [
            JobHandle(client, job.id, job.queue, None, enqueued=True, from_outbox=True) for job, _ in jobs
        ]

    async def _write_requests(
        self,
        requests: Sequence[Request[R]],
        session: AsyncSession,
        queue: str | None,
        job_ids: Sequence[str | None],
        max_tries: int | None,
        delay_ms: int,
    ) -> list[JobHandle[R]]:
        client = self.mediator._jobs  # raises before anything is written when the mediator is not open
        jobs = self.mediator._prepare_requests(requests, queue, job_ids, max_tries, delay_ms)
        await self._write(session, jobs)
        return [
            JobHandle(
                client,
                job.id,
                job.queue,
                self.mediator._adapter(type(request)),
                enqueued=True,
                from_outbox=True,
            )
            for request, (job, _) in zip(requests, jobs, strict=True)
        ]

    async def _write(self, session: AsyncSession, prepared: list[tuple[PendingJob, Span]]) -> None:
        """Insert the prepared jobs into *session*'s transaction and, on PostgreSQL, notify the relays.

        Their PRODUCER spans end here: the message is sent once it is in the transaction, and the trace
        context the envelopes carry makes each job's span a child of its span all the same.
        """
        if not prepared:
            return
        created = now_ms()
        rows = [
            {
                "job_id": job.id,
                "queue": job.queue,
                "body": job.body,
                "due_at": created + job.delay_ms,
                "created_at": created,
            }
            for job, _ in prepared
        ]
        try:
            await session.execute(insert(self.table), rows)
            if (await session.connection()).dialect.name == "postgresql":
                # Delivered at commit, never on rollback; one per transaction however many rows it wrote.
                await session.execute(select(func.pg_notify(self.table.name, "")))
        except BaseException as error:
            for _, span in prepared:
                record_failure(span, error)
                span.end()
            raise
        for _, span in prepared:
            span.set_attribute("arq_mediator.outbox", self.table.name)
            span.end()
