"""The Redis side of the producer: push envelopes, read status, await results, abort, requeue, stats."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from ._envelope import JobEnvelope, ResultRecord
from ._errors import JobNotFoundError
from ._handle import ABORTED_TYPES, JobStatus, aborted
from ._history import TYPES_KEY
from ._keys import (
    QUEUE_PREFIX,
    QUEUES_KEY,
    RESULT_PREFIX,
    WORKERS_KEY,
    Channels,
    failed_key,
    job_key,
    recurring_key,
    result_key,
)
from ._policy import KEEP_FAILED
from ._results import ResultWaiter
from ._scripts import Scripts

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ._history import JobHistory

# ENQUEUE's answer per job.
ADDED, ALREADY_QUEUED, ALREADY_FINISHED = 1, 0, 2
_STATES = {
    b"running": JobStatus.IN_PROGRESS,
    b"queued": JobStatus.QUEUED,
    b"deferred": JobStatus.DEFERRED,
    b"missing": JobStatus.NOT_FOUND,
}
# Seconds a timed-out wait may spend on saying where the job stands.
_DESCRIBE_WITHIN = 0.5


def now_ms() -> int:
    """Return the wall-clock time in ms since the epoch, the unit of every score and timestamp."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A job ready to push: its id, queue, how long (ms) after it reaches Redis it may start, its envelope.

    Its message type and the id of the job whose handler enqueued it (``""`` for none) go to the history.
    """

    id: str
    queue: str
    delay_ms: int
    body: str
    type: str = ""
    parent: str = ""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for one queue: ready to run, running now, deferred to later, and failed (kept)."""

    name: str
    ready: int
    running: int
    deferred: int
    failed: int


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One live worker process, as its last heartbeat described it."""

    name: str
    instance: str
    host: str
    pid: int
    queues: list[str]
    max_jobs: int
    running: int
    succeeded: int
    failed: int
    retried: int
    started_at: int
    last_seen: int
    lost: int = 0
    types: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of every known queue and live worker, with totals."""

    queues: list[QueueStats]
    workers: list[WorkerState]

    @property
    def totals(self) -> dict[str, int]:
        """Return ready, running, deferred and failed summed over queues, and the number of workers."""
        keys = ("ready", "running", "deferred", "failed")
        summed = {key: sum(getattr(queue, key) for queue in self.queues) for key in keys}
        return summed | {"workers": len(self.workers)}


class JobClient:
    """Everything the producer side asks of Redis, each a single round trip where the design allows."""

    # Whether worker processes serve these queues (so a queue none serves is worth a warning).
    has_workers = True
    # What the scripts record of each job's life for the dashboard; None records nothing.
    history: JobHistory | None = None

    def __init__(
        self,
        redis: Redis,
        *,
        keep_failed: float = KEEP_FAILED,
        errors: Mapping[str, type[BaseException]] | None = None,
        history: JobHistory | None = None,
    ) -> None:
        self.redis = redis
        self.keep_failed = keep_failed
        self.history = history
        self._types_recorded: set[str] = set()
        # Exception types a failed job's caller gets raised as themselves, by qualified name.
        self.errors: Mapping[str, type[BaseException]] = errors if errors is not None else {}
        self.channels = Channels(db=int(redis.connection_pool.connection_kwargs.get("db", 0)))
        self.scripts = Scripts(redis, self.channels, history)
        self.results = ResultWaiter(redis, self.channels)

    async def push(self, jobs: list[PendingJob]) -> list[tuple[int, str, str]]:
        """Store and queue *jobs* in one round trip.

        Returns:
            Per job, ADDED, ALREADY_QUEUED or ALREADY_FINISHED; the queue the job is on (for a job id that
            existed already, the existing job's queue, whatever this call asked for); and for such a job
            its message type, when it can be read ("" otherwise).
        """
        arguments: list[str | int] = []
        for job in jobs:
            arguments += (job.id, job.queue, job.delay_ms, job.body, job.type, job.parent)
        await self._record_types(jobs)
        reply = await self.scripts.enqueue(args=arguments)
        return [
            (int(reply[i]), reply[i + 1].decode(errors="replace"), reply[i + 2].decode(errors="replace"))
            for i in range(0, len(reply), 3)
        ]

    async def _record_types(self, jobs: list[PendingJob]) -> None:
        """Add the request types the history has not heard of from this process to its list of types.

        Done here, once per type and process, rather than by the enqueue script on every job.
        """
        if self.history is None:
            return
        new = {job.type for job in jobs if job.type} - self._types_recorded
        if new:
            await self.redis.sadd(TYPES_KEY, *new)  # type: ignore[misc]
            self._types_recorded |= new

    async def enqueue_tick(self, schedule: str, tick_ms: int, job: PendingJob) -> bool:
        """Push the job of one tick of recurring *schedule* unless that tick or a later one was pushed."""
        arguments: list[str | int] = [
            recurring_key(schedule),
            tick_ms,
            job.id,
            job.queue,
            job.delay_ms,
            job.body,
            job.type,
            job.parent,
        ]
        await self._record_types([job])
        outcome, _, _ = await self.scripts.enqueue_tick(args=arguments)
        return int(outcome) == ADDED

    async def complete_many(self, batch: list[list[Any]]) -> list[bool]:
        """Record the outcomes in *batch* (COMPLETE's arguments per job) in one script call, one round trip.

        Returns:
            Per job, whether its outcome was recorded; ``False`` when its caller no longer held it.
        """
        arguments = [argument for job in batch for argument in job]
        # EVALSHA, loading the script when Redis lost it (it restarted, or its script cache was flushed).
        recorded: list[int] = await self.scripts.complete(args=arguments)
        return [bool(outcome) for outcome in recorded]

    async def status(self, job_id: str) -> tuple[JobStatus, ResultRecord | None]:
        """Return where *job_id* stands and, once it finished, its result record."""
        state, detail = await self.scripts.status(args=[job_id])
        if state == b"finished":
            record = ResultRecord.model_validate_json(detail)
            return status_of(record), record
        return _STATES[state], None

    async def wait(self, job_id: str, timeout: float | None) -> ResultRecord:
        """Wait for *job_id* to finish; return its result record.

        Raises:
            JobNotFoundError: the job is neither queued, running nor finished.
            TimeoutError: *timeout* seconds passed first; the message says where the job stands.
        """
        if timeout is not None and timeout <= 0:  # a look, not a wait
            record = await self._finished_record(job_id)
            if record is None:
                raise TimeoutError(await self._unfinished(job_id, timeout))
            return record
        try:
            async with asyncio.timeout(timeout):  # bounds the whole wait, subscribing included
                future = await self.results.subscribe(job_id)
                try:
                    record = await self._finished_record(job_id)
                    return record or ResultRecord.model_validate_json(await future)
                finally:
                    self.results.forget(job_id, future)
        except TimeoutError as error:
            raise TimeoutError(await self._unfinished(job_id, timeout)) from error

    async def _unfinished(self, job_id: str, timeout: float | None) -> str:
        """Describe a job that did not finish in time: its status, its queue, whether a worker serves it."""
        try:
            async with asyncio.timeout(_DESCRIBE_WITHIN):  # the caller's time is up already
                state, body = await self.scripts.status(args=[job_id])
                envelope = envelope_of(body) if state != b"finished" else None
                queue = envelope.queue if envelope else ""
                served = {q for worker in await self.workers() for q in worker.queues}
        except (RedisError, OSError, TimeoutError) as error:
            return f"job {job_id} did not finish within {timeout}s (its status is unknown: {error})"
        status = _STATES.get(state, JobStatus.SUCCEEDED)
        where = f" on queue {queue!r}" if queue else ""
        hint = ""
        if queue and queue not in served:
            hint = f"; no live worker serves queue {queue!r}: start one with --queues {queue}"
        return f"job {job_id} did not finish within {timeout}s: it is {status.value}{where}{hint}"

    async def _finished_record(self, job_id: str) -> ResultRecord | None:
        """Return the job's result record if it finished, ``None`` if it is still to come.

        Raises:
            JobNotFoundError: the job is neither queued, running nor finished.
        """
        state, record = await self.status(job_id)
        if state is JobStatus.NOT_FOUND:
            raise JobNotFoundError(f"no job {job_id} is queued, running or finished (results expire)")
        return record

    async def abort(self, job_id: str, keep_ms: int) -> bool:
        """Remove *job_id* if it has not started, else ask its worker to cancel it.

        Either way it ends recorded as failed by `JobAbortedError`, kept *keep_ms* and listed with the failed
        jobs, from where it can be requeued.

        Returns:
            ``False`` when the job had already finished.

        Raises:
            JobNotFoundError: no such job exists.
        """
        while True:
            body = await self.redis.get(job_key(job_id))
            envelope = envelope_of(body)
            queue = envelope.queue if envelope else ""
            # An unreadable body (a legacy pickled arq job) names no queue: look for it in every queue,
            # those arq-mediator never enqueued on included (a rare case: a scan is affordable here).
            queues = [queue] if queue else sorted(await self._every_queue()) if body else []
            record = ResultRecord(
                id=job_id,
                queue=queue,
                ok=False,
                type=envelope.type if envelope else "",
                error=aborted("aborted before it started"),
                job=envelope,
                finished_at=now_ms(),
            )
            outcome = await self.scripts.abort(
                args=[job_id, body or "", record.model_dump_json(), keep_ms, *queues]
            )
            if outcome == -1:
                raise JobNotFoundError(f"no job {job_id} to abort")
            if outcome != -2:  # -2: the job changed between our read and the script; read again
                return bool(outcome)

    async def requeue(self, job_id: str) -> tuple[str, bool]:
        """Put a failed job back on its queue as a fresh job with all its tries.

        Returns:
            Its queue, and whether it was requeued (``False``: a job with that id is queued or running).

        Raises:
            JobNotFoundError: no failed job with that id is kept (or it cannot be rebuilt).
        """
        raw = await self.redis.get(result_key(job_id))
        record = None if raw is None else ResultRecord.model_validate_json(raw)
        if record is None or record.ok or record.job is None:
            raise JobNotFoundError(f"no failed job {job_id} with its envelope is kept; nothing to requeue")
        fresh = record.job.model_copy(update={"failures": 0, "due_at": now_ms()})
        requeued = await self.scripts.requeue(args=[job_id, fresh.queue, fresh.model_dump_json()])
        return fresh.queue, bool(requeued)

    async def failed(self, queue: str, limit: int = 100) -> list[ResultRecord]:
        """Return the most recent failed jobs of *queue*, newest first; forget those whose record expired."""
        if limit <= 0:
            return []
        # Ids stay bytes: whatever another client put in the set must not stop the listing.
        job_ids: list[bytes] = await self.redis.zrevrange(failed_key(queue), 0, limit - 1)
        if not job_ids:
            return []
        raws = await self.redis.mget([RESULT_PREFIX.encode() + job_id for job_id in job_ids])
        expired = [job_id for job_id, raw in zip(job_ids, raws, strict=True) if raw is None]
        if expired:
            await self.redis.zrem(failed_key(queue), *expired)
        records = []
        for raw in raws:
            if raw is not None:
                with contextlib.suppress(ValidationError):
                    records.append(ResultRecord.model_validate_json(raw))
        return records

    async def workers(self) -> list[WorkerState]:
        """Return every worker whose heartbeat has not expired, from the registry their heartbeats keep."""
        keys: list[bytes] = await self.redis.zrange(WORKERS_KEY, 0, -1)
        raws = await self.redis.mget(keys) if keys else []
        gone = [key for key, raw in zip(keys, raws, strict=True) if raw is None]
        if gone:
            await self.redis.zrem(WORKERS_KEY, *gone)
        states = [state for raw in raws if raw is not None and (state := _worker_state(raw)) is not None]
        return sorted(states, key=lambda state: (state.name, state.instance))

    async def queue_names(self) -> set[str]:
        """Return every queue a job was enqueued on, from the registry the enqueue script keeps."""
        names: set[bytes] = await self.redis.smembers(QUEUES_KEY)  # type: ignore[misc]
        return {name.decode(errors="replace") for name in names}

    async def _every_queue(self) -> set[str]:
        """Return every queue in Redis, those found only by a SCAN of the keyspace included."""
        pattern = QUEUE_PREFIX + "*"
        scanned = {key[len(QUEUE_PREFIX) :] async for key in self.redis.scan_iter(match=pattern, count=500)}
        return await self.queue_names() | {name.decode(errors="replace") for name in scanned}

    async def stats(self, known_queues: set[str]) -> Stats:
        """Return counts for *known_queues*, the queues in Redis and the queues of live workers."""
        workers = await self.workers()
        names = sorted(known_queues | await self.queue_names() | {q for w in workers for q in w.queues})
        counts: list[int] = await self.scripts.queue_stats(args=names) if names else []
        queues = [QueueStats(name, *counts[i * 4 : i * 4 + 4]) for i, name in enumerate(names)]
        return Stats(queues=queues, workers=workers)

    async def close(self) -> None:
        """Stop waiting for results."""
        await self.results.close()


def _worker_state(raw: bytes) -> WorkerState | None:
    """Read a worker's heartbeat record; ``None`` when it is not one (another client's key, say)."""
    try:
        return WorkerState(**json.loads(raw))
    except (TypeError, ValueError):
        return None


def envelope_of(body: bytes | None) -> JobEnvelope | None:
    """Return the envelope a job body holds, or ``None`` when there is none or it cannot be read."""
    if not body:
        return None
    try:
        return JobEnvelope.model_validate_json(body)
    except ValidationError:
        return None


def status_of(record: ResultRecord) -> JobStatus:
    """Return the final status a result record stands for: succeeded, failed or aborted."""
    if record.ok:
        return JobStatus.SUCCEEDED
    if record.error is not None and record.error.type in ABORTED_TYPES:
        return JobStatus.ABORTED
    return JobStatus.FAILED
