"""Running one claimed job: read its envelope, run its pipeline in a CONSUMER span, record the outcome.

`Worker` mixes this in; the claim loop, heartbeat and drain stay in `_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._context import Context, JobInfo
from ._envelope import ErrorRecord, JobEnvelope, ResultRecord, decode_envelope, encode_raw
from ._errors import EnvelopeError, HandlerNotFound, JobAborted, WorkerLost
from ._jobs import now_ms
from ._messages import Request, response_type_of
from ._telemetry import (
    job_duration,
    jobs_processed,
    jobs_retried,
    queue_wait,
    record_failure,
    start_consumer_span,
)

if TYPE_CHECKING:
    from ._mediator import Mediator
    from ._registry import HandlerSpec
    from ._worker import WorkerSettings

logger = logging.getLogger("arq_mediator.worker")
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
# Failures are kept a week, for people to look at and requeue.
KEEP_FAILED_SECONDS = 7 * 86_400.0


@dataclass(slots=True)
class Counters:
    """What one worker has done since it started."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    started_at: int = field(default_factory=now_ms)


class JobRunner:
    """How a worker runs each job it claimed; see `Worker` for the state it shares."""

    mediator: Mediator
    name: str
    counters: Counters
    _running: dict[str, asyncio.Task[None]]
    _aborting: set[str]
    _adapters: dict[type, TypeAdapter[Any]]
    _stopped_at: int | None
    _to_record: list[tuple[list[Any], asyncio.Future[None]]]
    _recorder: asyncio.Task[None] | None
    settings: WorkerSettings

    async def _run_job(self, job_id: str, queue: str, deliveries: int, body: bytes) -> None:
        started = now_ms()
        try:
            envelope = decode_envelope(job_id, body)
        except EnvelopeError as error:
            logger.error("worker %s rejected job %s from %s: %s", self.name, job_id, queue, error)
            await self._fail(job_id, queue, None, error, started, raw=encode_raw(body))
            return
        lost = deliveries - envelope.failures - 1
        if lost >= self.settings.max_lost:
            poison = WorkerLost(f"job {job_id} lost its worker {lost} times; failed as poison")
            await self._fail(job_id, queue, envelope, poison, started)
            return
        attributes = {"messaging.destination.name": queue}
        queue_wait.record(max(started - (envelope.due_at or envelope.enqueued_at), 0) / 1000, attributes)
        span = start_consumer_span(queue, envelope.type, job_id, envelope.failures + 1, envelope.trace)
        # Failures are recorded on the span by hand, with their error.type; a give-back on shutdown is
        # not a failure of the job and must not mark it as one.
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                spec = self._spec_for(envelope)
                message = spec.message_type.model_validate(envelope.payload)
            except (HandlerNotFound, ValidationError) as error:
                await self._fail(job_id, queue, envelope, error, started)
                return
            await self._execute(envelope, queue, spec, message, started)

    def _spec_for(self, envelope: JobEnvelope) -> HandlerSpec:
        registry = self.mediator.registry
        message_type = registry.by_name.get(envelope.type)
        if message_type is None:
            specs = []
        elif issubclass(message_type, Request):
            specs = [registry.requests[message_type]]
        else:
            specs = registry.handlers_of(message_type)
        for spec in specs:
            if envelope.handler is None or spec.name == envelope.handler:
                return spec
        raise HandlerNotFound(
            f"worker {self.name} (queues {', '.join(self.settings.queues)}) has no handler "
            f"{envelope.handler or ''} for {envelope.type}; "
            f"it handles: {', '.join(registry.registered_names()) or 'nothing'}"
        )

    async def _execute(
        self, envelope: JobEnvelope, queue: str, spec: HandlerSpec, message: Any, started: int
    ) -> None:
        job = JobInfo(
            id=envelope.id,
            queue=queue,
            try_number=envelope.failures + 1,
            max_tries=envelope.max_tries,
            enqueued_at=datetime.fromtimestamp(envelope.enqueued_at / 1000, UTC),
            worker=self.name,
        )
        job_logger = logging.LoggerAdapter(self.mediator.logger, {"job_id": envelope.id, "queue": queue})
        ctx = Context(mediator=self.mediator, logger=job_logger, resources=self.mediator.resources, job=job)
        head, tail = self.mediator.registry.route(spec, ctx)
        clock = asyncio.get_running_loop().time
        began = clock()
        try:
            try:
                async with asyncio.timeout(spec.policy.timeout):
                    value = await head(message, tail)
            finally:  # every try counts, the failed and timed-out ones too
                job_duration.record(clock() - began, {"messaging.destination.name": queue})
            encoded = self._encode(spec, value)
        except asyncio.CancelledError as cancelled:
            task = asyncio.current_task()
            if task is not None and task.cancelling() == 0:
                # Nobody cancelled this task: the handler raised CancelledError itself (say, it awaited a
                # future someone cancelled). That is a failed try, not a stop, or it would run forever.
                await self._after_failure(envelope, queue, spec, cancelled, started)
                return
            if envelope.id in self._aborting:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                await self._fail(envelope.id, queue, envelope, JobAborted("aborted while running"), started)
                return
            trace.get_current_span().set_attribute("arq_mediator.job.outcome", "given back")
            await self._give_back(envelope.id, queue)
            raise
        except PydanticSerializationError as error:  # the handler broke its contract: no retry mends that
            await self._fail(envelope.id, queue, envelope, error, started)
            return
        except Exception as error:
            await self._after_failure(envelope, queue, spec, error, started)
            return
        record = ResultRecord(
            id=envelope.id,
            queue=queue,
            ok=True,
            value=encoded,
            try_number=job.try_number,
            worker=self.name,
            started_at=started,
            finished_at=now_ms(),
        )
        if await self._complete(record, spec.policy.keep_result, failed=False):
            self.counters.succeeded += 1

    def _encode(self, spec: HandlerSpec, value: Any) -> Any:
        message_type = spec.message_type
        if not issubclass(message_type, Request):
            return None
        adapter = self._adapters.get(message_type)
        if adapter is None:
            adapter = self._adapters[message_type] = TypeAdapter(response_type_of(message_type))
        # warnings="error": a handler returning something other than its declared type fails its job
        # here, rather than "succeeding" with a value the caller cannot read back.
        return adapter.dump_python(value, mode="json", warnings="error")

    async def _after_failure(
        self, envelope: JobEnvelope, queue: str, spec: HandlerSpec, error: BaseException, started: int
    ) -> None:
        try_number = envelope.failures + 1
        if isinstance(error, spec.policy.retry_on) and try_number < envelope.max_tries:
            delay = spec.policy.backoff.delay(try_number)
            logger.warning(
                "job %s (%s) try %d/%d failed with %r; retrying in %.2fs",
                envelope.id,
                envelope.type,
                try_number,
                envelope.max_tries,
                error,
                delay,
            )
            due = now_ms() + int(delay * 1000)
            retried = envelope.model_copy(update={"failures": try_number, "due_at": due})
            span = trace.get_current_span()
            record_failure(span, error)
            span.set_attribute("arq_mediator.job.outcome", "retried")
            jobs_retried.add(1, {"messaging.destination.name": queue})
            jobs_processed.add(
                1, {"messaging.destination.name": queue, "arq_mediator.job.outcome": "retried"}
            )
            arguments: list[str | int] = [envelope.id, queue, retried.model_dump_json(), due, now_ms()]
            await self._with_redis(partial(self.mediator.jobs.scripts.retry, args=arguments))
            self.counters.retried += 1
            return
        await self._fail(envelope.id, queue, envelope, error, started)

    async def _fail(
        self,
        job_id: str,
        queue: str,
        envelope: JobEnvelope | None,
        error: BaseException,
        started: int,
        raw: str | None = None,
    ) -> None:
        if not isinstance(error, (EnvelopeError, WorkerLost, JobAborted, HandlerNotFound)):
            logger.error("job %s failed for good: %r", job_id, error)
        span = trace.get_current_span()  # the job's CONSUMER span, when it got as far as having one
        record_failure(span, error)
        span.set_attribute("arq_mediator.job.outcome", "failed")
        record = ResultRecord(
            id=job_id,
            queue=queue,
            ok=False,
            error=ErrorRecord.from_exception(error),
            job=envelope,
            raw=raw,
            try_number=0 if envelope is None else envelope.failures + 1,
            worker=self.name,
            started_at=started,
            finished_at=now_ms(),
        )
        if await self._complete(record, KEEP_FAILED_SECONDS, failed=True):
            self.counters.failed += 1

    async def _complete(self, record: ResultRecord, keep_seconds: float, *, failed: bool) -> bool:
        """Record a finished job's outcome; return whether it was recorded."""
        arguments = [
            record.id,
            record.queue,
            record.model_dump_json(),
            int(keep_seconds * 1000),
            int(failed),
            now_ms(),
        ]
        done = asyncio.get_running_loop().create_future()
        self._to_record.append((arguments, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_batches(), name=f"{self.name} recorder")
        try:
            # Shielded: a job task cancelled now must not cancel the write it shares with other jobs.
            await asyncio.shield(done)
        except Exception as error:
            # Not recorded: the job keeps its lease until that lapses, then runs again (at least once).
            logger.error("worker %s could not record the outcome of job %s: %r", self.name, record.id, error)
            return False
        # No longer running once recorded, so counters and the running count never add up to one too many.
        self._running.pop(record.id, None)
        outcome = "failed" if failed else "succeeded"
        jobs_processed.add(
            1, {"messaging.destination.name": record.queue, "arq_mediator.job.outcome": outcome}
        )
        return True

    async def _give_back(self, job_id: str, queue: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.mediator.jobs.scripts.release(args=[job_id, queue])

    async def _record_batches(self) -> None:
        """Write the outcomes of finished jobs, all those of one event-loop turn in one round trip.

        A worker under load finishes many jobs per turn; one pipeline for them instead of a script call
        each halves the worker's CPU per job.
        """
        await asyncio.sleep(0)  # the other jobs finishing in this same turn join the batch
        while self._to_record:
            batch, self._to_record = self._to_record, []
            try:
                await self._with_redis(
                    partial(self.mediator.jobs.complete_many, [arguments for arguments, _ in batch])
                )
            except Exception as error:  # each waiting job hears of it; the recorder goes on with the next
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _with_redis(self, call: Callable[[], Awaitable[Any]]) -> None:
        """Make a state-changing call, retrying through a Redis outage: a finished job's outcome matters.

        Once the worker is stopping and the grace period has passed, it gives up: the job's lease then
        expires and another worker runs it again (at least once, never lost).
        """
        delay = 0.1
        while True:
            try:
                await call()
                return
            except REDIS_DOWN as error:
                if self._stopped_at is not None and now_ms() - self._stopped_at > self.settings.grace * 1000:
                    logger.error(
                        "worker %s could not record job outcomes before stopping: %s", self.name, error
                    )
                    return
                logger.warning(
                    "worker %s cannot record job outcomes (%s); retrying in %.1fs", self.name, error, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
