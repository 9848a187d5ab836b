"""The background half of the mediator: enqueue, defer, batch, recurring schedules, handles and stats."""

from __future__ import annotations

import os
import socket
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import TypeAdapter

from ._cron import CronSchedule
from ._envelope import ResultRecord, dumps
from ._errors import QueueNotConnectedError
from ._handle import JobHandle
from ._jobs import ADDED, JobClient, PendingJob, Stats, now_ms
from ._messages import Message, Notification, Request, response_type_of
from ._policy import to_seconds
from ._telemetry import jobs_enqueued, record_failure, start_producer_span

if TYPE_CHECKING:
    from datetime import tzinfo

    from opentelemetry.trace import Span

    from ._registry import HandlerSpec, Registry

R = TypeVar("R")
_PRODUCER = {"host": socket.gethostname(), "pid": str(os.getpid())}


@dataclass(frozen=True, slots=True)
class RecurringJob:
    """A request enqueued on a cron schedule by the workers, once per tick across all of them."""

    name: str
    request: Request[Any]
    schedule: CronSchedule
    misfire_grace: timedelta | None = None


class Producer:
    """Enqueueing and job inspection; mixed into `Mediator`, which supplies the registry and client."""

    _registry: Registry
    _client: JobClient | None
    _recurring: dict[str, RecurringJob]
    _adapters: dict[type, TypeAdapter[Any]]
    max_job_bytes: int
    keep_failed: float

    @property
    def jobs(self) -> JobClient:
        """Return the open Redis job client.

        Raises:
            QueueNotConnectedError: the mediator has no Redis connection open.
        """
        if self._client is None:
            raise QueueNotConnectedError(
                "this mediator has no Redis connection: create it with Mediator(redis=...) and enter "
                "`async with mediator:` (or call `await mediator.connect(redis)`) before enqueueing"
            )
        return self._client

    @overload
    async def enqueue(
        self,
        message: Request[R],
        *,
        queue: str | None = None,
        job_id: str | None = None,
        max_tries: int | None = None,
    ) -> JobHandle[R]: ...

    @overload
    async def enqueue(
        self,
        message: Notification,
        *,
        queue: str | None = None,
        job_id: str | None = None,
        max_tries: int | None = None,
    ) -> list[JobHandle[None]]: ...

    async def enqueue(
        self,
        message: Message,
        *,
        queue: str | None = None,
        job_id: str | None = None,
        max_tries: int | None = None,
    ) -> JobHandle[Any] | list[JobHandle[None]]:
        """Queue *message* to run in a worker now; return a handle to its result.

        A request becomes one job on its handler's queue (or *queue*). A notification becomes one job per
        handler, each on that handler's queue with its own tries, and a list of handles comes back.

        Args:
            message: The request or notification.
            queue: Send the job(s) here instead of the handler's queue.
            job_id: An idempotency key: while a job with this id is queued, running or its result is kept,
                enqueueing it again returns the existing job's handle and adds nothing.
            max_tries: Tries in all for this job, overriding the handler's policy.

        Raises:
            NoHandlerError: a request type with no handler, before anything reaches Redis.
        """
        return await self._schedule(message, queue=queue, job_id=job_id, max_tries=max_tries, delay_ms=0)

    @overload
    async def defer(
        self,
        message: Request[R],
        *,
        by: timedelta | float | None = None,
        at: datetime | None = None,
        queue: str | None = None,
        job_id: str | None = None,
    ) -> JobHandle[R]: ...

    @overload
    async def defer(
        self,
        message: Notification,
        *,
        by: timedelta | float | None = None,
        at: datetime | None = None,
        queue: str | None = None,
        job_id: str | None = None,
    ) -> list[JobHandle[None]]: ...

    async def defer(
        self,
        message: Message,
        *,
        by: timedelta | float | None = None,
        at: datetime | None = None,
        queue: str | None = None,
        job_id: str | None = None,
    ) -> JobHandle[Any] | list[JobHandle[None]]:
        """Queue *message* to run later: *by* a delay (seconds or timedelta) or *at* an aware datetime.

        Raises:
            ValueError: both or neither of *by* and *at*, a negative delay, or a naive *at*.
        """
        if (by is None) == (at is None):
            raise ValueError("defer() takes exactly one of by= (a delay) or at= (an aware datetime)")
        if at is not None:
            if at.tzinfo is None or at.utcoffset() is None:
                raise ValueError(
                    "defer(at=...) needs a timezone-aware datetime, e.g. datetime.now(UTC) + delta"
                )
            delay_ms = int(at.timestamp() * 1000) - now_ms()
        else:
            seconds = to_seconds(by) or 0.0
            if seconds < 0:
                raise ValueError(f"defer(by=...) needs a delay of zero or more, got {seconds} s")
            delay_ms = int(seconds * 1000)
        return await self._schedule(
            message, queue=queue, job_id=job_id, max_tries=None, delay_ms=max(delay_ms, 0)
        )

    async def enqueue_many(
        self, messages: Sequence[Request[R]], *, queue: str | None = None
    ) -> list[JobHandle[R]]:
        """Queue many requests in one round trip to Redis; return their handles in order.

        Raises:
            NoHandlerError: any request type lacks a handler; nothing is queued then.
        """
        now = now_ms()
        jobs = [
            self._pending(m, self._registry.handler_for(type(m)), queue, None, None, now, 0) for m in messages
        ]
        outcomes = await self._push(jobs)
        return [
            self._handle_for(type(m), job.id, placed, outcome == ADDED)
            for m, (job, _), (outcome, placed) in zip(messages, jobs, outcomes, strict=True)
        ]

    async def _schedule(
        self, message: Message, *, queue: str | None, job_id: str | None, max_tries: int | None, delay_ms: int
    ) -> JobHandle[Any] | list[JobHandle[None]]:
        now = now_ms()
        if isinstance(message, Request):
            spec = self._registry.handler_for(type(message))
            pending = self._pending(message, spec, queue, job_id, max_tries, now, delay_ms)
            [(outcome, placed)] = await self._push([pending])
            return self._handle_for(type(message), pending[0].id, placed, outcome == ADDED)
        specs = self._registry.handlers_of(type(message))
        jobs = [
            self._pending(
                message,
                spec,
                queue,
                f"{job_id}:{spec.name}" if job_id else None,
                max_tries,
                now,
                delay_ms,
            )
            for spec in specs
        ]
        outcomes = await self._push(jobs) if jobs else []
        return [
            JobHandle(self.jobs, job.id, placed, None, enqueued=outcome == ADDED)
            for (job, _), (outcome, placed) in zip(jobs, outcomes, strict=True)
        ]

    async def _push(self, prepared: list[tuple[PendingJob, Span]]) -> list[tuple[int, str]]:
        """Push jobs in one round trip and end their PRODUCER spans, marking failures and duplicates."""
        try:
            outcomes = await self.jobs.push([job for job, _ in prepared])
        except BaseException as error:
            for _, span in prepared:
                record_failure(span, error)
                span.end()
            raise
        added: Counter[str] = Counter()
        for (job, span), (outcome, _) in zip(prepared, outcomes, strict=True):
            if outcome == ADDED:
                added[job.queue] += 1
            else:  # an idempotent repeat: nothing was sent
                span.set_attribute("arq_mediator.job.existing", True)
            span.end()
        for queue, count in added.items():  # one measurement per queue, not per job, for batches
            jobs_enqueued.add(count, {"messaging.destination.name": queue})
        return outcomes

    def _pending(
        self,
        message: Message,
        spec: HandlerSpec,
        queue: str | None,
        job_id: str | None,
        max_tries: int | None,
        now: int,
        delay_ms: int,
    ) -> tuple[PendingJob, Span]:
        if max_tries is not None and max_tries < 1:
            raise ValueError(f"max_tries must be at least 1, got {max_tries}")
        job_id = job_id or uuid.uuid4().hex
        queue = queue or spec.policy.queue
        message_name = type(message).message_name
        span, trace_context = start_producer_span(queue, message_name, job_id)
        header = {
            "v": 1,
            "id": job_id,
            "type": message_name,
            "handler": None if isinstance(message, Request) else spec.name,
            "queue": queue,
            "max_tries": max_tries or spec.policy.max_tries,
            "enqueued_at": now,
            "due_at": now + delay_ms,
            "trace": trace_context,
            "meta": _PRODUCER,
        }
        # The payload is serialized by pydantic's core and spliced in, rather than dumped to Python
        # objects and serialized again: the envelope's JSON is the hot part of enqueueing.
        body = dumps(header)[:-1] + ',"payload":' + message.model_dump_json() + "}"
        if len(body) > self.max_job_bytes and len(body.encode()) > self.max_job_bytes:
            span.end()
            raise ValueError(
                f"{message_name} job is {len(body.encode())} bytes of JSON, over the limit of "
                f"{self.max_job_bytes} (Mediator(max_job_bytes=...)); pass a reference to large data "
                "(a key, a path, a URL) rather than the data itself"
            )
        return PendingJob(id=job_id, queue=queue, delay_ms=delay_ms, body=body), span

    def _handle_for(
        self, request_type: type[Request[R]], job_id: str, queue: str, enqueued: bool
    ) -> JobHandle[R]:
        return JobHandle(self.jobs, job_id, queue, self._adapter(request_type), enqueued=enqueued)

    def _adapter(self, request_type: type[Request[Any]]) -> TypeAdapter[Any]:
        adapter = self._adapters.get(request_type)
        if adapter is None:
            adapter = self._adapters[request_type] = TypeAdapter(response_type_of(request_type))
        return adapter

    @overload
    def job(self, job_id: str) -> JobHandle[Any]: ...

    @overload
    def job(self, job_id: str, request_type: type[Request[R]]) -> JobHandle[R]: ...

    def job(self, job_id: str, request_type: type[Request[R]] | None = None) -> JobHandle[R] | JobHandle[Any]:
        """Rebuild the handle of job *job_id*; with *request_type*, its result is validated and typed."""
        adapter = None if request_type is None else self._adapter(request_type)
        return JobHandle(self.jobs, job_id, None, adapter)

    def recurring(
        self,
        request: Request[Any],
        *,
        cron: str,
        name: str | None = None,
        tz: str | tzinfo = "UTC",
        misfire_grace: timedelta | float | None = None,
    ) -> RecurringJob:
        """Have the workers enqueue *request* on a *cron* schedule, once per tick across all of them.

        Args:
            request: What to run on each tick.
            cron: A five-field cron expression (or @hourly, @daily, ...).
            name: The schedule's name, for `trigger`; the request type's name by default.
            tz: The time zone the expression is read in.
            misfire_grace: How late a tick missed while no worker ran may still run, once, when a worker
                starts; one interval of the schedule by default, ``0`` never to catch up.

        Raises:
            NoHandlerError: the request type has no handler.
            ValueError: the expression is invalid, or the name is taken.
        """
        self._registry.handler_for(type(request))
        name = name or type(request).message_name
        if name in self._recurring:
            raise ValueError(f"a recurring job named {name!r} is already registered")
        grace = to_seconds(misfire_grace)
        if grace is not None and grace < 0:
            raise ValueError(f"misfire_grace must be zero or more, got {grace} s")
        entry = RecurringJob(
            name=name,
            request=request,
            schedule=CronSchedule(cron, tz),
            misfire_grace=None if grace is None else timedelta(seconds=grace),
        )
        self._recurring[name] = entry
        return entry

    @property
    def recurring_jobs(self) -> dict[str, RecurringJob]:
        """Return the recurring jobs by name."""
        return dict(self._recurring)

    async def trigger(self, name: str) -> JobHandle[Any]:
        """Enqueue recurring job *name* now, besides its schedule.

        Raises:
            KeyError: no recurring job has that name; the message lists the names there are.
        """
        entry = self._recurring.get(name)
        if entry is None:
            raise KeyError(
                f"no recurring job named {name!r}; there are: {', '.join(sorted(self._recurring)) or 'none'}"
            )
        return await self.enqueue(entry.request, job_id=f"recurring:{name}:manual:{uuid.uuid4().hex}")

    async def enqueue_tick(self, entry: RecurringJob, tick: datetime) -> bool:
        """Enqueue one tick of *entry* under an id fixed by the tick; return whether this call added it."""
        job_id = f"recurring:{entry.name}:{int(tick.timestamp())}"
        spec = self._registry.handler_for(type(entry.request))
        job, span = self._pending(entry.request, spec, None, job_id, None, now_ms(), 0)
        try:
            added = await self.jobs.enqueue_tick(entry.name, int(tick.timestamp() * 1000), job)
        except BaseException as error:
            record_failure(span, error)
            raise
        finally:
            span.end()
        if added:
            jobs_enqueued.add(1, {"messaging.destination.name": job.queue})
        return added

    async def stats(self) -> Stats:
        """Return per-queue counts (ready, running, deferred, failed), live workers, and totals."""
        known = {spec.policy.queue for spec in self._registry.requests.values()}
        known |= {spec.policy.queue for specs in self._registry.notifications.values() for spec in specs}
        return await self.jobs.stats(known)

    async def failed_jobs(self, queue: str, limit: int = 100) -> list[ResultRecord]:
        """Return the newest failed jobs of *queue* with their error records."""
        return await self.jobs.failed(queue, limit)

    async def requeue(self, job_id: str) -> JobHandle[Any]:
        """Put failed (or aborted) job *job_id* back on its queue with all its tries; return its handle.

        The handle's ``enqueued`` is ``False`` when a job with that id was already queued or running, so
        nothing was requeued.

        Raises:
            JobNotFound: no failed job with that id is kept.
        """
        queue, requeued = await self.jobs.requeue(job_id)
        return JobHandle(self.jobs, job_id, queue, None, enqueued=requeued)
