"""The background half of the mediator: enqueue, defer, batch, recurring schedules, handles and stats."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError

from ._cluster import is_cluster_url
from ._cron import CronSchedule
from ._envelope import ResultRecord, dumps
from ._errors import (
    JobIdConflictError,
    MessageEncodingError,
    QueueNotConnectedError,
    redis_unavailable_as_queue_error,
)
from ._handle import JobHandle
from ._jobs import ADDED, JobClient, PendingJob, Stats, now_ms
from ._layout import CLUSTER, SINGLE, Layout
from ._live import current_job
from ._messages import Message, Notification, Request, response_type_of
from ._policy import Durability, durability_of, to_seconds
from ._telemetry import jobs_enqueued, record_failure, start_producer_span

if TYPE_CHECKING:
    from datetime import tzinfo

    from arq.connections import RedisSettings
    from opentelemetry.trace import Span

    from ._registry import HandlerSpec, Registry

R = TypeVar("R")
logger = logging.getLogger("arq_mediator.producer")
# Seconds between two checks, per queue, that some live worker serves the queue jobs are sent to.
SERVED_CHECK_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class RecurringJob:
    """A request enqueued on a cron schedule by the workers, once per tick across all of them."""

    name: str
    request: Request[Any]
    schedule: CronSchedule
    misfire_grace: timedelta | None = None


class Producer:
    """The background half of a mediator: enqueueing, job handles, recurring schedules, inspection.

    `Mediator` derives from it and adds inline dispatch and the lifecycle that opens `_client`; the state
    used here is set up here, from the registry the two halves share.

    Args:
        registry: The handlers, their policies and the registered error types.
        keep_failed: Seconds a failed or aborted job's record is kept.
        max_job_bytes: The largest envelope `enqueue` accepts.
    """

    def __init__(self, registry: Registry, *, keep_failed: float, max_job_bytes: int) -> None:
        if keep_failed <= 0:
            raise ValueError(f"keep_failed must be positive, got {keep_failed}")
        if max_job_bytes < 1024:
            raise ValueError(f"max_job_bytes must be at least 1024, got {max_job_bytes}")
        self._registry = registry
        self.keep_failed = keep_failed
        self.max_job_bytes = max_job_bytes
        self._client: JobClient | None = None
        self._recurring: dict[str, RecurringJob] = {}
        self._adapters: dict[type, TypeAdapter[Any]] = {}
        # When each queue was last checked for a live worker serving it (monotonic seconds).
        self._served_checked: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        # What every enqueue waits for unless the call says otherwise: nothing, or replicas (`Durability`).
        self.durable_enqueue: Durability | None = None
        # Where the mediator's Redis is (a URL or arq settings), when it opens its own client.
        self._redis_target: str | RedisSettings | None = None

    @property
    def _layout(self) -> Layout:
        """Return the key layout of the mediator's Redis: its client's, or its URL's before it opens."""
        if self._client is not None:
            return self._client.layout
        target = self._redis_target
        return CLUSTER if isinstance(target, str) and is_cluster_url(target) else SINGLE

    @property
    def _jobs(self) -> JobClient:
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

    async def enqueue(
        self,
        request: Request[R],
        *,
        queue: str | None = None,
        job_id: str | None = None,
        max_tries: int | None = None,
        durable: Durability | bool | None = None,
    ) -> JobHandle[R]:
        """Queue *request* to run in a worker now; return a handle to its typed result.

        Args:
            request: The request; its handler's policy says where and how it runs.
            queue: Send the job here instead of the handler's queue.
            job_id: An idempotency key: while a job with this id is queued, running or its result is kept,
                enqueueing it again adds nothing and returns the existing job's handle (``enqueued`` is
                then ``False``).
            max_tries: Tries in all for this job, overriding the handler's policy.
            durable: Wait until replicas hold the job before returning (``True``: one replica, see
                `Durability`); ``False`` not to; the mediator's ``durable_enqueue`` when ``None``.

        Raises:
            NoHandlerError: the request's type has no handler (nothing reaches Redis).
            JobIdConflictError: *job_id* belongs to a job of another message type.
            QueueUnavailableError: Redis could not be reached or did not answer in time.
            NotReplicatedError: a durable enqueue's job reached the master but not enough replicas in time.
            ValueError: the job is over ``max_job_bytes``, or *max_tries* is below 1.
            TypeError: *request* is a `Notification`: use `enqueue_publish`.
        """
        [handle] = await self._enqueue_requests([request], queue, [job_id], max_tries, 0, durable)
        return handle

    async def defer(
        self,
        request: Request[R],
        *,
        by: timedelta | float | None = None,
        at: datetime | None = None,
        queue: str | None = None,
        job_id: str | None = None,
        max_tries: int | None = None,
        durable: Durability | bool | None = None,
    ) -> JobHandle[R]:
        """Queue *request* to run later: *by* a delay (seconds or timedelta) or *at* an aware datetime.

        The other options are `enqueue`'s. The delay is counted on the Redis server's clock.

        Raises:
            ValueError: both or neither of *by* and *at*, a negative delay, or a naive *at*.
        """
        delay_ms = _delay_ms(by, at, required=True)
        [handle] = await self._enqueue_requests([request], queue, [job_id], max_tries, delay_ms, durable)
        return handle

    async def enqueue_many(
        self,
        requests: Sequence[Request[R]],
        *,
        queue: str | None = None,
        job_ids: Sequence[str | None] | None = None,
        max_tries: int | None = None,
        by: timedelta | float | None = None,
        at: datetime | None = None,
        durable: Durability | bool | None = None,
    ) -> list[JobHandle[R]]:
        """Queue many requests in one round trip to Redis; return their handles in order.

        Args:
            requests: The requests, of one type or several.
            queue: Send every job here instead of each handler's queue.
            job_ids: One idempotency key (or ``None``) per request, as in `enqueue`.
            max_tries: Tries in all for every job, overriding the handlers' policies.
            by: Delay every job by this much, as in `defer`.
            at: Or start every job at this aware datetime.
            durable: Wait until replicas hold every job, as in `enqueue`.

        Raises:
            NoHandlerError: any request type lacks a handler; nothing is queued then.
            JobIdConflictError: a job id belongs to a job of another type (the others were queued).
        """
        ids = list(job_ids) if job_ids is not None else [None] * len(requests)
        if len(ids) != len(requests):
            raise ValueError(f"enqueue_many got {len(requests)} requests but {len(ids)} job ids")
        return await self._enqueue_requests(requests, queue, ids, max_tries, _delay_ms(by, at), durable)

    async def enqueue_publish(
        self,
        notification: Notification,
        *,
        queue: str | None = None,
        job_id: str | None = None,
        max_tries: int | None = None,
        by: timedelta | float | None = None,
        at: datetime | None = None,
        durable: Durability | bool | None = None,
    ) -> list[JobHandle[None]]:
        """Publish *notification* in the background: one job per handler, each with its own tries.

        Each job goes to its handler's queue (or *queue*); with *job_id*, each handler's job gets the id
        ``<job_id>:<handler name>``, an idempotency key as in `enqueue`. *by* or *at* delay them all, as in
        `defer`; *durable* waits for replicas as in `enqueue`. A notification with no handler queues nothing
        and returns an empty list.

        Raises:
            QueueUnavailableError: Redis could not be reached or did not answer in time.
        """
        jobs = self._prepare_publish(notification, queue, job_id, max_tries, _delay_ms(by, at))
        outcomes = await self._push(jobs, durable) if jobs else []
        return [
            JobHandle(self._jobs, job.id, placed, None, enqueued=outcome == ADDED)
            for (job, _), (outcome, placed, _) in zip(jobs, outcomes, strict=True)
        ]

    def _prepare_publish(
        self,
        notification: Notification,
        queue: str | None,
        job_id: str | None,
        max_tries: int | None,
        delay_ms: int,
    ) -> list[tuple[PendingJob, Span]]:
        """Prepare one job per handler of *notification* (see `enqueue_publish`), ready to push or store."""
        if not isinstance(notification, Notification):
            raise TypeError("enqueue_publish() takes a Notification; for a request use enqueue()")
        now = now_ms()
        return [
            self._pending(
                notification,
                spec,
                queue,
                f"{job_id}:{spec.name}" if job_id else None,
                max_tries,
                now,
                delay_ms,
            )
            for spec in self._registry.handlers_of(type(notification))
        ]

    def _prepare_requests(
        self,
        requests: Sequence[Request[Any]],
        queue: str | None,
        job_ids: Sequence[str | None],
        max_tries: int | None,
        delay_ms: int,
    ) -> list[tuple[PendingJob, Span]]:
        """Prepare one job per request, ready to push or store; their PRODUCER spans are started.

        Raises:
            NoHandlerError: a request type has no handler.
            TypeError: one of *requests* is not a `Request`.
        """
        now = now_ms()
        jobs = []
        for request, job_id in zip(requests, job_ids, strict=True):
            if not isinstance(request, Request):
                raise TypeError(
                    f"enqueue() takes a Request; to run the handlers of {type(request).__qualname__} in the "
                    "background use enqueue_publish()"
                )
            spec = self._registry.handler_for(type(request))
            jobs.append(self._pending(request, spec, queue, job_id, max_tries, now, delay_ms))
        return jobs

    async def _enqueue_requests(
        self,
        requests: Sequence[Request[R]],
        queue: str | None,
        job_ids: Sequence[str | None],
        max_tries: int | None,
        delay_ms: int,
        durable: Durability | bool | None,
    ) -> list[JobHandle[R]]:
        jobs = self._prepare_requests(requests, queue, job_ids, max_tries, delay_ms)
        outcomes = await self._push(jobs, durable)
        conflicts = [
            (job.id, existing)
            for (job, _), request, (_, _, existing) in zip(jobs, requests, outcomes, strict=True)
            if existing and existing != type(request).message_name
        ]
        if conflicts:
            described = "; ".join(f"job {job_id} is a {existing}" for job_id, existing in conflicts)
            raise JobIdConflictError(
                f"{described}: a job id names one job, whatever its type. Use another id, or wait until the "
                "existing job's result expires"
            )
        return [
            self._handle_for(type(request), job.id, placed, outcome == ADDED)
            for request, (job, _), (outcome, placed, _) in zip(requests, jobs, outcomes, strict=True)
        ]

    async def _push(
        self, prepared: list[tuple[PendingJob, Span]], durable: Durability | bool | None
    ) -> list[tuple[int, str, str]]:
        """Push jobs in one round trip and end their PRODUCER spans, marking failures and duplicates."""
        durability = durability_of(durable, self.durable_enqueue)
        try:
            with redis_unavailable_as_queue_error():
                outcomes = await self._jobs.push([job for job, _ in prepared], durability)
        except BaseException as error:
            for _, span in prepared:
                record_failure(span, error)
                span.end()
            raise
        self._watch_served(outcomes)
        for (_, span), (outcome, _, _) in zip(prepared, outcomes, strict=True):
            if outcome != ADDED:  # an idempotent repeat: nothing was sent
                span.set_attribute("arq_mediator.job.existing", True)
            span.end()
        count_enqueued([job for job, _ in prepared], outcomes)
        return outcomes

    def _watch_served(self, outcomes: list[tuple[int, str, str]]) -> None:
        """Now and then, check in the background that a live worker serves the queues jobs went to."""
        if not self._jobs.has_workers:
            return
        now = time.monotonic()
        due = {
            queue
            for outcome, queue, _ in outcomes
            if outcome == ADDED
            and now - self._served_checked.get(queue, -SERVED_CHECK_EVERY) >= SERVED_CHECK_EVERY
        }
        if not due:
            return
        self._served_checked.update(dict.fromkeys(due, now))
        task = asyncio.create_task(self._warn_if_unserved(sorted(due)), name="arq-mediator served check")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _warn_if_unserved(self, queues: list[str]) -> None:
        try:
            served = {queue for worker in await self._jobs.workers() for queue in worker.queues}
        except Exception:  # a courtesy check: Redis trouble shows up elsewhere, loudly
            return
        for queue in queues:
            if queue not in served:
                logger.warning(
                    "no live worker serves queue %r: its jobs wait there until one starts, e.g. "
                    "`python -m arq_mediator worker <module>:<mediator> --queues %s`",
                    queue,
                    queue,
                )

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
        queue = queue or spec.policy.queue
        job_id = self._layout.job_id(queue, job_id or uuid.uuid4().hex)
        message_name = type(message).message_name
        parent = current_job.get()
        span, trace_context = start_producer_span(queue, message_name, job_id)
        header: dict[str, Any] = {
            "v": 1,
            "id": job_id,
            "type": message_name,
            "queue": queue,
            "max_tries": max_tries or spec.policy.max_tries,
            "enqueued_at": now,
        }
        # What is default is left out (a queued job's envelope is most of its memory in Redis): no
        # handler for a request, due when enqueued, no trace context, no parent job.
        if not isinstance(message, Request):
            header["handler"] = spec.name
        if delay_ms:
            header["due_at"] = now + delay_ms
        if trace_context:
            header["trace"] = trace_context
        if parent is not None:
            header["meta"] = {"parent": parent}
        # The payload is serialized by pydantic's core and spliced in, rather than dumped to Python
        # objects and serialized again: the envelope's JSON is the hot part of enqueueing.
        try:
            payload = message.model_dump_json()
        except PydanticSerializationError as error:  # an `Any` field holding what JSON cannot carry, say
            span.end()
            raise MessageEncodingError(f"{message_name} cannot be sent as a job: {error}") from error
        body = dumps(header)[:-1] + ',"payload":' + payload + "}"
        if len(body) > self.max_job_bytes and len(body.encode()) > self.max_job_bytes:
            span.end()
            raise MessageEncodingError(
                f"{message_name} job is {len(body.encode())} bytes of JSON, over the limit of "
                f"{self.max_job_bytes} (Mediator(max_job_bytes=...)); pass a reference to large data "
                "(a key, a path, a URL) rather than the data itself"
            )
        pending = PendingJob(job_id, queue, delay_ms, body, type=message_name, parent=parent or "")
        return pending, span

    def _handle_for(
        self, request_type: type[Request[R]], job_id: str, queue: str, enqueued: bool
    ) -> JobHandle[R]:
        return JobHandle(self._jobs, job_id, queue, self._adapter(request_type), enqueued=enqueued)

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
        return JobHandle(self._jobs, job_id, None, adapter)

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
            added = await self._jobs.enqueue_tick(entry.name, int(tick.timestamp() * 1000), job)
        except BaseException as error:
            record_failure(span, error)
            raise
        finally:
            span.end()
        if added:
            jobs_enqueued.add(1, {"messaging.destination.name": job.queue})
        return added

    async def ping(self) -> float:
        """Check that the job queue's Redis answers; return the round trip in seconds (for health checks).

        Raises:
            QueueNotConnectedError: the mediator has no Redis connection open.
            QueueUnavailableError: Redis could not be reached or did not answer in time.
        """
        began = time.perf_counter()
        with redis_unavailable_as_queue_error():
            await self._jobs.redis.ping()
        return time.perf_counter() - began

    async def stats(self) -> Stats:
        """Return per-queue counts (ready, running, deferred, failed), live workers, and totals."""
        with redis_unavailable_as_queue_error():
            return await self._jobs.stats(self._known_queues())

    def _known_queues(self) -> set[str]:
        """Return the queues the registered handlers send their jobs to."""
        specs = list(self._registry.requests.values())
        specs += [spec for group in self._registry.notifications.values() for spec in group]
        return {spec.policy.queue for spec in specs}

    async def failed_jobs(self, queue: str, limit: int = 100) -> list[ResultRecord]:
        """Return the newest failed jobs of *queue* with their error records."""
        with redis_unavailable_as_queue_error():
            return await self._jobs.failed(queue, limit)

    async def requeue(self, job_id: str) -> JobHandle[Any]:
        """Put failed (or aborted) job *job_id* back on its queue with all its tries; return its handle.

        The handle's ``enqueued`` is ``False`` when a job with that id was already queued or running, so
        nothing was requeued.

        Raises:
            JobNotFoundError: no failed job with that id is kept.
        """
        with redis_unavailable_as_queue_error():
            queue, requeued = await self._jobs.requeue(job_id)
        # On a cluster an id given without its queue's tag gets it back: the handle names the job's key.
        return JobHandle(self._jobs, self._layout.job_id(queue, job_id), queue, None, enqueued=requeued)


def count_enqueued(jobs: Sequence[PendingJob], outcomes: Sequence[tuple[int, str, str]]) -> None:
    """Count the jobs that *outcomes* say were added, one measurement per queue rather than per job."""
    added = Counter(
        job.queue for job, (outcome, _, _) in zip(jobs, outcomes, strict=True) if outcome == ADDED
    )
    for queue, count in added.items():
        jobs_enqueued.add(count, {"messaging.destination.name": queue})


def _delay_ms(by: timedelta | float | None, at: datetime | None, *, required: bool = False) -> int:
    """Return the delay in ms that *by* (a delay) or *at* (an aware datetime) asks for; 0 for neither.

    Raises:
        ValueError: both are given (or neither, when *required*), a negative delay, or a naive *at*.
    """
    if (by is not None and at is not None) or (required and by is None and at is None):
        raise ValueError("give exactly one of by= (a delay) or at= (an aware datetime)")
    if at is not None:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("at= needs a timezone-aware datetime, e.g. datetime.now(UTC) + delta")
        return max(int(at.timestamp() * 1000) - now_ms(), 0)
    seconds = to_seconds(by) or 0.0
    if seconds < 0:
        raise ValueError(f"by= needs a delay of zero or more, got {seconds} s")
    return int(seconds * 1000)
