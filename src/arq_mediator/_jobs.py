"""The Redis side of the producer: push envelopes, read status, await results, abort, requeue, stats."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from redis.exceptions import NoScriptError

from ._envelope import ErrorRecord, JobEnvelope, ResultRecord, qualified_name
from ._errors import JobAborted, JobNotFound
from ._handle import JobStatus
from ._keys import QUEUE_PREFIX, WORKER_PREFIX, Channels, failed_key, job_key, result_key
from ._results import ResultWaiter
from ._scripts import Scripts

if TYPE_CHECKING:
    from redis.asyncio import Redis

# ENQUEUE's answer per job.
ADDED, ALREADY_QUEUED, ALREADY_FINISHED = 1, 0, 2
_STATES = {
    b"running": JobStatus.IN_PROGRESS,
    b"queued": JobStatus.QUEUED,
    b"deferred": JobStatus.DEFERRED,
    b"missing": JobStatus.NOT_FOUND,
}


def now_ms() -> int:
    """Return the wall-clock time in ms since the epoch, the unit of every score and timestamp."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A job ready to push: its id, queue, the time (ms) it may start, and its JSON envelope."""

    id: str
    queue: str
    score: int
    body: str


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

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.channels = Channels(db=int(redis.connection_pool.connection_kwargs.get("db", 0)))
        self.scripts = Scripts(redis, self.channels)
        self.results = ResultWaiter(redis, self.channels)

    async def push(self, jobs: list[PendingJob]) -> list[tuple[int, str]]:
        """Store and queue *jobs* in one round trip.

        Returns:
            Per job, ADDED, ALREADY_QUEUED or ALREADY_FINISHED, and the queue the job is on: for a job id
            that existed already, the existing job's queue, whatever this call asked for.
        """
        arguments: list[str | int] = []
        for job in jobs:
            arguments += (job.id, job.queue, job.score, job.body)
        reply = await self.scripts.enqueue(args=arguments)
        return [(int(reply[i]), reply[i + 1].decode()) for i in range(0, len(reply), 2)]

    async def complete_many(self, batch: list[list[Any]]) -> None:
        """Run the COMPLETE script once per argument list in *batch*, all in one pipeline (one round trip)."""
        script = self.scripts.complete
        async with self.redis.pipeline(transaction=False) as pipe:
            for arguments in batch:
                pipe.evalsha(script.sha, 0, *arguments)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, NoScriptError):
                raise result
        unloaded = [
            args for args, result in zip(batch, results, strict=True) if isinstance(result, NoScriptError)
        ]
        if unloaded:  # Redis restarted and lost its script cache: load the script and send those again
            script.sha = await self.redis.script_load(script.script)
            await self.complete_many(unloaded)

    async def status(self, job_id: str) -> tuple[JobStatus, ResultRecord | None]:
        """Return where *job_id* stands and, once it finished, its result record."""
        state, detail = await self.scripts.status(args=[job_id, now_ms()])
        if state == b"finished":
            record = ResultRecord.model_validate_json(detail)
            return (JobStatus.SUCCEEDED if record.ok else JobStatus.FAILED), record
        return _STATES[state], None

    async def wait(self, job_id: str, timeout: float | None) -> ResultRecord:
        """Wait for *job_id* to finish; return its result record.

        Raises:
            JobNotFound: the job is neither queued, running nor finished.
            TimeoutError: *timeout* seconds passed first.
        """
        if timeout is not None and timeout <= 0:  # a look, not a wait
            record = await self._finished_record(job_id)
            if record is None:
                raise TimeoutError(f"job {job_id} has not finished")
            return record
        async with asyncio.timeout(timeout):  # bounds the whole wait, subscribing included
            future = await self.results.subscribe(job_id)
            try:
                record = await self._finished_record(job_id)
                return record or ResultRecord.model_validate_json(await future)
            finally:
                self.results.forget(job_id, future)

    async def _finished_record(self, job_id: str) -> ResultRecord | None:
        """Return the job's result record if it finished, ``None`` if it is still to come.

        Raises:
            JobNotFound: the job is neither queued, running nor finished.
        """
        state, record = await self.status(job_id)
        if state is JobStatus.NOT_FOUND:
            raise JobNotFound(f"no job {job_id} is queued, running or finished (results expire)")
        return record

    async def abort(self, job_id: str) -> bool:
        """Remove *job_id* if it has not started, else ask its worker to cancel it.

        Returns:
            ``False`` when the job had already finished.

        Raises:
            JobNotFound: no such job exists.
        """
        while True:
            body = await self.redis.get(job_key(job_id))
            queue = _queue_of(body)
            # An unreadable body (a legacy pickled arq job) names no queue: look for it in every queue.
            queues = [queue] if queue else sorted(await self.queue_names()) if body else []
            record = ResultRecord(
                id=job_id,
                queue=queue,
                ok=False,
                error=ErrorRecord(type=qualified_name(JobAborted), message="aborted before it started"),
                finished_at=now_ms(),
            )
            outcome = await self.scripts.abort(
                args=[job_id, body or "", record.model_dump_json(), 86_400_000, now_ms(), *queues]
            )
            if outcome == -1:
                raise JobNotFound(f"no job {job_id} to abort")
            if outcome != -2:  # -2: the job changed between our read and the script; read again
                return bool(outcome)

    async def requeue(self, job_id: str) -> str:
        """Put a failed job back on its queue as a fresh job with all its tries; return its queue.

        Raises:
            JobNotFound: no failed job with that id is kept (or it cannot be rebuilt).
        """
        raw = await self.redis.get(result_key(job_id))
        record = None if raw is None else ResultRecord.model_validate_json(raw)
        if record is None or record.ok or record.job is None:
            raise JobNotFound(f"no failed job {job_id} with its envelope is kept; nothing to requeue")
        now = now_ms()
        fresh = record.job.model_copy(update={"failures": 0, "due_at": now})
        await self.scripts.requeue(args=[job_id, fresh.queue, fresh.model_dump_json(), now])
        return fresh.queue

    async def failed(self, queue: str, limit: int = 100) -> list[ResultRecord]:
        """Return the most recent failed jobs of *queue*, newest first; forget those whose record expired."""
        if limit <= 0:
            return []
        job_ids = [raw.decode() for raw in await self.redis.zrevrange(failed_key(queue), 0, limit - 1)]
        if not job_ids:
            return []
        raws = await self.redis.mget([result_key(job_id) for job_id in job_ids])
        expired = [job_id for job_id, raw in zip(job_ids, raws, strict=True) if raw is None]
        if expired:
            await self.redis.zrem(failed_key(queue), *expired)
        return [ResultRecord.model_validate_json(raw) for raw in raws if raw is not None]

    async def workers(self) -> list[WorkerState]:
        """Return every worker whose heartbeat has not expired, found with SCAN (never KEYS)."""
        keys = [key async for key in self.redis.scan_iter(match=WORKER_PREFIX + "*", count=500)]
        raws = await self.redis.mget(keys) if keys else []
        states = [WorkerState(**json.loads(raw)) for raw in raws if raw is not None]
        return sorted(states, key=lambda state: (state.name, state.instance))

    async def queue_names(self) -> set[str]:
        """Return the queues that exist in Redis now, found with SCAN."""
        pattern = QUEUE_PREFIX + "*"
        return {
            key.decode()[len(QUEUE_PREFIX) :] async for key in self.redis.scan_iter(match=pattern, count=500)
        }

    async def stats(self, known_queues: set[str]) -> Stats:
        """Return counts for *known_queues*, the queues in Redis and the queues of live workers."""
        workers = await self.workers()
        names = sorted(known_queues | await self.queue_names() | {q for w in workers for q in w.queues})
        counts: list[int] = await self.scripts.queue_stats(args=[now_ms(), *names]) if names else []
        queues = [QueueStats(name, *counts[i * 4 : i * 4 + 4]) for i, name in enumerate(names)]
        return Stats(queues=queues, workers=workers)

    async def close(self) -> None:
        """Stop waiting for results."""
        await self.results.close()


def _queue_of(body: bytes | None) -> str:
    """Return the queue named in a job body, or "" when there is none or it cannot be read."""
    if body is None:
        return ""
    try:
        return JobEnvelope.model_validate_json(body).queue
    except ValidationError:
        return ""
