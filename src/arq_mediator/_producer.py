"""Enqueue requests and notifications as jobs (now, later, in batches) and hand back their typed handles."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import TypeAdapter

from ._errors import JobIdConflictError, redis_unavailable_as_queue_error
from ._handle import JobHandle
from ._job_builder import build_job, delay_ms_of
from ._jobs import ADDED, PendingJob, now_ms
from ._messages import Notification, Request, response_type_of
from ._policy import Durability, durability_of
from ._queue_access import QueueAccess
from ._telemetry import jobs_enqueued, record_failure

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ._registry import Registry

R = TypeVar("R")
logger = logging.getLogger("arq_mediator.producer")
# Seconds between two checks, per queue, that some live worker serves the queue jobs are sent to.
SERVED_CHECK_EVERY = 60.0


class Producer(QueueAccess):
    """Enqueueing: jobs now, deferred or in batches, their handles, and a watch that some worker serves them.

    `Mediator` derives from it, through `RecurringJobs`, beside the queue admin and inline dispatch.
    """

    def __init__(self, registry: Registry, *, keep_failed: float, max_job_bytes: int) -> None:
        super().__init__(registry, keep_failed=keep_failed, max_job_bytes=max_job_bytes)
        self._adapters: dict[type, TypeAdapter[Any]] = {}
        # When each queue was last checked for a live worker serving it (monotonic seconds).
        self._served_checked: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

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
        delay_ms = delay_ms_of(by, at, required=True)
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
        return await self._enqueue_requests(requests, queue, ids, max_tries, delay_ms_of(by, at), durable)

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
        jobs = self._prepare_publish(notification, queue, job_id, max_tries, delay_ms_of(by, at))
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
        now, layout = now_ms(), self._layout
        return [
            build_job(
                notification,
                spec,
                queue,
                f"{job_id}:{spec.name}" if job_id else None,
                max_tries,
                now,
                delay_ms,
                layout=layout,
                max_job_bytes=self.max_job_bytes,
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
        now, layout = now_ms(), self._layout
        jobs = []
        for request, job_id in zip(requests, job_ids, strict=True):
            if not isinstance(request, Request):
                raise TypeError(
                    f"enqueue() takes a Request; to run the handlers of {type(request).__qualname__} in the "
                    "background use enqueue_publish()"
                )
            spec = self._registry.handler_for(type(request))
            jobs.append(
                build_job(
                    request,
                    spec,
                    queue,
                    job_id,
                    max_tries,
                    now,
                    delay_ms,
                    layout=layout,
                    max_job_bytes=self.max_job_bytes,
                )
            )
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


def count_enqueued(jobs: Sequence[PendingJob], outcomes: Sequence[tuple[int, str, str]]) -> None:
    """Count the jobs that *outcomes* say were added, one measurement per queue rather than per job."""
    added = Counter(
        job.queue for job, (outcome, _, _) in zip(jobs, outcomes, strict=True) if outcome == ADDED
    )
    for queue, count in added.items():
        jobs_enqueued.add(count, {"messaging.destination.name": queue})
