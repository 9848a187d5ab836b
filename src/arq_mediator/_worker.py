"""The worker: takes jobs from an ordered set of queues under one concurrency cap and runs their handlers.

It replaces arq's `Worker` loop (one queue, polling, long in-progress keys) and keeps arq's data layout.
The loop claims as many jobs as it has free slots in one script call, highest-priority queue first;
idle, it sleeps until a wake-up message, the next deferred job, or a slow fallback tick. Each running job
holds a short lease that the heartbeat renews, so a dead worker's jobs come back within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._context import Context, JobInfo
from ._envelope import ErrorRecord, JobEnvelope, ResultRecord, decode_envelope, encode_raw
from ._errors import EnvelopeError, HandlerNotFound, JobAborted, WorkerLost
from ._jobs import now_ms
from ._keys import worker_key
from ._messages import Request, response_type_of
from ._recurring import run_schedules

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from ._mediator import Mediator
    from ._registry import HandlerSpec

logger = logging.getLogger("arq_mediator.worker")
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How one worker process runs: its queues in priority order and its concurrency cap.

    Attributes:
        queues: Queues to take jobs from, the first highest in priority.
        max_jobs: Jobs running at once, at most, across all its queues.
        name: A readable name for logs and stats; host and pid by default.
        lease: Seconds a job stays claimed without a heartbeat; a crashed worker's jobs return after this.
        heartbeat: Seconds between heartbeats (which renew leases and the worker's registry entry).
        idle_check: Seconds between claims when no wake-up arrives (picks up jobs whose lease expired).
        grace: Seconds running jobs get to finish after a stop request before they are given back.
        max_lost: Times a job may lose its worker before it is failed as poison.
    """

    queues: Sequence[str]
    max_jobs: int = 10
    name: str | None = None
    lease: float = 10.0
    heartbeat: float = 2.0
    idle_check: float = 1.0
    grace: float = 25.0
    max_lost: int = 5

    def __post_init__(self) -> None:
        if not self.queues or any(not queue for queue in self.queues):
            raise ValueError("a worker needs one or more non-empty queue names")
        if len(set(self.queues)) != len(self.queues):
            raise ValueError(f"a worker's queues must be distinct, got {list(self.queues)}")
        if self.max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {self.max_jobs}")
        if not 0 < self.heartbeat < self.lease:
            raise ValueError(
                f"heartbeat ({self.heartbeat}s) must be positive and shorter than the lease ({self.lease}s)"
            )


@dataclass(slots=True)
class _Counters:
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    started_at: int = field(default_factory=now_ms)


class Worker:
    """Run background jobs of a mediator from an ordered set of queues; see `WorkerSettings`.

    The constructor only records configuration; `run` connects, works until `stop`, then drains.
    """

    def __init__(self, mediator: Mediator, settings: WorkerSettings) -> None:
        self.mediator = mediator
        self.settings = settings
        self.instance = uuid.uuid4().hex[:12]
        self.name = settings.name or f"{socket.gethostname()}-{os.getpid()}"
        self.counters = _Counters()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._aborting: set[str] = set()
        self._attention = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped_at: int | None = None
        self._adapters: dict[type, TypeAdapter[Any]] = {}

    @property
    def running(self) -> int:
        """Return how many jobs run now."""
        return len(self._running)

    def stop(self) -> None:
        """Stop taking jobs; `run` then lets running jobs finish within the grace period and returns."""
        if self._stopped_at is None:
            self._stopped_at = now_ms()
        self._stopping.set()
        self._attention.set()

    async def run(self) -> None:
        """Work until `stop` is called, then drain: finish or give back every running job."""
        jobs = self.mediator.jobs
        pubsub = jobs.redis.pubsub(ignore_subscribe_messages=True)
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"{self.name} heartbeat")
        helpers: list[asyncio.Task[None]] = [heartbeat]
        try:
            channels = jobs.channels
            await pubsub.subscribe(*(channels.wake(q) for q in self.settings.queues), channels.abort)
            helpers.append(asyncio.create_task(self._listen(pubsub), name=f"{self.name} listener"))
            if self.mediator.recurring_jobs:
                helpers.append(asyncio.create_task(run_schedules(self.mediator, self._stopping)))
            logger.info(
                "worker %s started: queues %s, max %d jobs",
                self.name,
                ", ".join(self.settings.queues),
                self.settings.max_jobs,
            )
            await self._claim_loop()
        finally:
            await self._drain(heartbeat)
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            with contextlib.suppress(RedisError, OSError):
                await jobs.redis.delete(worker_key(self.instance))
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            logger.info("worker %s stopped: %s", self.name, self._describe_counts())

    def _describe_counts(self) -> str:
        counts = self.counters
        return f"{counts.succeeded} succeeded, {counts.failed} failed, {counts.retried} retried"

    async def _claim_loop(self) -> None:
        claim = self.mediator.jobs.scripts.claim
        lease_ms = int(self.settings.lease * 1000)
        backoff = 0.1
        while not self._stopping.is_set():
            free = self.settings.max_jobs - len(self._running)
            if free <= 0:
                self._attention.clear()
                if self.settings.max_jobs - len(self._running) <= 0:
                    await self._attention.wait()
                continue
            # Cleared before the claim, so a wake-up arriving during the round trip is not lost.
            self._attention.clear()
            try:
                queues = self.settings.queues
                arguments: list[str | int] = [
                    now_ms(),
                    free,
                    lease_ms,
                    self.instance,
                    len(queues),
                    *queues,
                    *self._running,
                ]
                reply = await claim(args=arguments)
            except _REDIS_DOWN as error:
                logger.warning(
                    "worker %s cannot reach Redis (%s); retrying in %.1fs", self.name, error, backoff
                )
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            next_due = int(reply[0])
            for index in range(1, len(reply), 4):
                job_id = reply[index].decode()
                job = self._run_job(
                    job_id, reply[index + 1].decode(), int(reply[index + 2]), reply[index + 3]
                )
                task = asyncio.create_task(job)
                self._running[job_id] = task
                task.add_done_callback(partial(self._finished, job_id))
            if (len(reply) - 1) // 4 < free:
                wait = self.settings.idle_check
                if next_due >= 0:
                    wait = min(wait, max(next_due - now_ms(), 0) / 1000)
                await self._pause(wait)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._attention.wait()

    def _finished(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._running.get(job_id) is task:
            del self._running[job_id]
        self._aborting.discard(job_id)
        self._attention.set()

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
        specs = [] if message_type is None else registry.handlers_of(message_type)
        if message_type is not None and issubclass(message_type, Request):
            specs = [registry.requests[message_type]]
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
        try:
            async with asyncio.timeout(spec.policy.timeout):
                value = await head(message, tail)
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
        await self._complete(record, spec.policy.keep_result, failed=False)
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
            retried = envelope.model_copy(update={"failures": try_number})
            due = now_ms() + int(delay * 1000)
            await self._with_redis(
                self.mediator.jobs.scripts.retry,
                [envelope.id, queue, retried.model_dump_json(), due, now_ms()],
            )
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
        keep = 7 * 86_400.0  # failures are kept a week, for people to look at and requeue
        await self._complete(record, keep, failed=True)
        self.counters.failed += 1

    async def _complete(self, record: ResultRecord, keep_seconds: float, *, failed: bool) -> None:
        arguments = [
            record.id,
            record.queue,
            record.model_dump_json(),
            int(keep_seconds * 1000),
            int(failed),
            now_ms(),
        ]
        await self._with_redis(self.mediator.jobs.scripts.complete, arguments)
        # No longer running once recorded, so counters and the running count never add up to one too many.
        self._running.pop(record.id, None)

    async def _give_back(self, job_id: str, queue: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.mediator.jobs.scripts.release(args=[job_id, queue])

    async def _with_redis(self, script: Any, arguments: list[Any]) -> None:
        """Run a state-changing script, retrying through a Redis outage: a finished job's outcome matters.

        Once the worker is stopping and the grace period has passed, it gives up: the job's lease then
        expires and another worker runs it again (at least once, never lost).
        """
        delay = 0.1
        while True:
            try:
                await script(args=arguments)
                return
            except _REDIS_DOWN as error:
                if self._stopped_at is not None and now_ms() - self._stopped_at > self.settings.grace * 1000:
                    logger.error(
                        "worker %s could not record job %s before stopping: %s",
                        self.name,
                        arguments[0],
                        error,
                    )
                    return
                logger.warning(
                    "worker %s cannot record job %s (%s); retrying in %.1fs",
                    self.name,
                    arguments[0],
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _drain(self, heartbeat: asyncio.Task[None]) -> None:
        if self._running:
            logger.info(
                "worker %s draining %d running job(s), up to %.1fs",
                self.name,
                len(self._running),
                self.settings.grace,
            )
            await asyncio.wait(list(self._running.values()), timeout=self.settings.grace)
        # No renewal may be in flight while jobs are given back, or it could re-take a returned job's lease.
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        remaining = list(self._running.values())
        for task in remaining:
            task.cancel()
        if remaining:
            logger.warning(
                "worker %s gave %d unfinished job(s) back to their queues", self.name, len(remaining)
            )
            await asyncio.gather(*remaining, return_exceptions=True)

    def _abort(self, job_id: str) -> None:
        task = self._running.get(job_id)
        if task is not None and job_id not in self._aborting:
            self._aborting.add(job_id)
            task.cancel()

    async def _listen(self, pubsub: PubSub) -> None:
        channels = self.mediator.jobs.channels
        delay = 0.1
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except _REDIS_DOWN as error:
                logger.warning(
                    "worker %s lost its wake-up channel (%s); reconnecting in %.1fs", self.name, error, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._attention.set()  # wake-ups may have been missed meanwhile
                continue
            delay = 0.1
            if message is None or message["type"] != "message":
                continue
            channel = message["channel"].decode()
            if channel == channels.abort:
                self._abort(message["data"].decode())
            elif channel.startswith(channels.wake_prefix):
                self._attention.set()

    def _record(self) -> str:
        counts = self.counters
        return json.dumps(
            {
                "name": self.name,
                "instance": self.instance,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(self.settings.queues),
                "max_jobs": self.settings.max_jobs,
                "running": len(self._running),
                "succeeded": counts.succeeded,
                "failed": counts.failed,
                "retried": counts.retried,
                "started_at": counts.started_at,
                "last_seen": now_ms(),
            }
        )

    async def _heartbeat_loop(self) -> None:
        heartbeat = self.mediator.jobs.scripts.heartbeat
        ttl_ms = int(self.settings.heartbeat * 3000)
        lease_ms = int(self.settings.lease * 1000)
        while True:
            try:
                aborted = await heartbeat(
                    args=[
                        worker_key(self.instance),
                        self._record(),
                        ttl_ms,
                        lease_ms,
                        self.instance,
                        *self._running,
                    ]
                )
                for job_id in aborted:
                    self._abort(job_id.decode())
            except _REDIS_DOWN as error:
                logger.warning("worker %s missed a heartbeat (%s)", self.name, error)
            await asyncio.sleep(self.settings.heartbeat)


async def run_worker(mediator: Mediator, settings: WorkerSettings, *, handle_signals: bool = True) -> Worker:
    """Open *mediator*, run a worker with *settings* until SIGTERM or SIGINT (or `Worker.stop`), then drain.

    The signal handlers stay in place until the mediator has closed, so a second signal during the
    drain asks for the same stop instead of killing the process half-way.

    Returns:
        The stopped worker, with its counters.
    """
    worker = Worker(mediator, settings)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for signum in signals:
        loop.add_signal_handler(signum, worker.stop)
    try:
        async with mediator:
            await worker.run()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return worker
