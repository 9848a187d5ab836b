"""The Redis side of the producer: push envelopes, read status, await results, abort, requeue.

What it reads of the queues and workers (stats, heartbeats, failed lists) is `_queue_introspection`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from redis.exceptions import NoScriptError, RedisError

from ._envelope import JobEnvelope, ResultRecord, stored_json
from ._errors import JobNotFoundError, NotReplicatedError
from ._handle import ABORTED_TYPES, JobStatus, aborted
from ._history import TYPES_KEY
from ._keys import JOB_PREFIX, RECURRING_PREFIX, RESULT_PREFIX, Channels
from ._layout import SINGLE, Layout, layout_of, run_script, tag_of
from ._policy import KEEP_FAILED, Durability
from ._queue_introspection import QueueIntrospection
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


class JobClient(QueueIntrospection):
    """Everything the producer side asks of Redis, each a single round trip where the design allows."""

    # Whether worker processes serve these queues (so a queue none serves is worth a warning).
    has_workers = True
    # What the scripts record of each job's life for the dashboard; None records nothing.
    history: JobHistory | None = None
    # Where keys live (arq's layout unless the client is a cluster's); a client without Redis has arq's.
    layout: Layout = SINGLE

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
        self.layout = layout_of(redis)
        pool = getattr(redis, "connection_pool", None)  # a cluster client has none: its database is 0
        self.channels = Channels(
            db=int(pool.connection_kwargs.get("db", 0)) if pool is not None else 0, layout=self.layout
        )
        self.scripts = Scripts(redis, self.channels, history)
        self.results = ResultWaiter(redis, self.channels)
        # On a cluster, the queues this process added to the registry of queues (`QUEUES_KEY`).
        self._queues_registered: set[str] = set()
        self._unavailable_for: set[str] = set()
        self._retrying: dict[str, asyncio.Future[bool]] = {}

    async def push(
        self, jobs: list[PendingJob], durability: Durability | None = None
    ) -> list[tuple[int, str, str]]:
        """Store and queue *jobs* in one round trip; with *durability*, wait for replicas in the same one.

        Returns:
            Per job, ADDED, ALREADY_QUEUED or ALREADY_FINISHED; the queue the job is on (for a job id that
            existed already, the existing job's queue, whatever this call asked for); and for such a job
            its message type, when it can be read ("" otherwise).

        Raises:
            NotReplicatedError: fewer replicas than *durability* asks for confirmed the jobs in time.
        """
        await self._record_types(jobs)
        if self.layout.cluster:
            return await self._push_per_queue(jobs, durability is not None)
        arguments: list[str | int] = []
        for job in jobs:
            arguments += (job.id, job.queue, job.delay_ms, job.body, job.type, job.parent)
        if durability is None:
            reply = await self.scripts.enqueue(args=arguments)
        else:
            reply = await self._push_replicated(arguments, durability, [job.id for job in jobs])
        return [
            (int(reply[i]), reply[i + 1].decode(errors="replace"), reply[i + 2].decode(errors="replace"))
            for i in range(0, len(reply), 3)
        ]

    async def _push_replicated(
        self, arguments: list[Any], durability: Durability, job_ids: list[str]
    ) -> list[Any]:
        """Run the enqueue script, then WAIT for replicas: one pipeline, so both use one connection.

        WAIT counts the replicas that hold every write its own connection made, so it must follow the
        script on the connection that ran it.
        """
        script = self.scripts.enqueue
        for _ in range(2):  # a second time only after Redis forgot the script (a restart or a failover)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, 0, *arguments)
                pipe.wait(durability.replicas, int(durability.timeout * 1000))
                reply, replicas = await pipe.execute(raise_on_error=False)
            if not isinstance(reply, NoScriptError):
                break
            script.sha = await self.redis.script_load(script.script)
        for result in (reply, replicas):
            if isinstance(result, Exception):
                raise result
        if int(replicas) < durability.replicas:
            raise NotReplicatedError(
                f"{len(job_ids)} job(s) reached the Redis master, but {replicas} of the "
                f"{durability.replicas} replica(s) asked for confirmed them within {durability.timeout}s: a "
                "failover now could lose them. Enqueue again with the same job ids once the replicas are "
                "back (ids: "
                f"{', '.join(job_ids[:5])}{', ...' if len(job_ids) > 5 else ''})",
                job_ids,
                int(replicas),
            )
        return reply  # type: ignore[no-any-return]

    async def _record_types(self, jobs: list[PendingJob]) -> None:
        """Add the request types the history has not heard of from this process to its list of types.

        Done here, once per type and process, rather than by the enqueue script on every job.
        """
        if self.history is None:
            return
        new = {job.type for job in jobs if job.type} - self._types_recorded
        recorded = new and await self._best_effort("record job types", self.redis.sadd(TYPES_KEY, *new))  # type: ignore[arg-type]
        if recorded:
            self._types_recorded |= new

    async def enqueue_tick(self, schedule: str, tick_ms: int, job: PendingJob) -> bool:
        """Push the job of one tick of recurring *schedule* unless that tick or a later one was pushed."""
        await self.register_queues({job.queue})
        arguments: list[str | int] = [
            self.layout.key(RECURRING_PREFIX, job.queue, schedule),
            tick_ms,
            job.id,
            job.queue,
            job.delay_ms,
            job.body,
            job.type,
            job.parent,
        ]
        await self._record_types([job])
        outcome, _, _ = await run_script(self.scripts.enqueue_tick, self.layout.route(job.queue), arguments)
        return int(outcome) == ADDED

    async def complete_many(self, batch: list[list[Any]]) -> list[bool]:
        """Record the outcomes in *batch* (COMPLETE's arguments per job) in one script call, one round trip.

        Returns:
            Per job, whether its outcome was recorded; ``False`` when its caller no longer held it.
        """
        if self.layout.cluster and len({job[3] for job in batch}) > 1:  # one call per queue (slot)
            return await self._complete_per_queue(batch)
        arguments = [argument for job in batch for argument in job]
        # EVALSHA, loading the script when Redis lost it (it restarted, or its script cache was flushed).
        keys = self.layout.route(str(batch[0][3])) if batch else []
        recorded: list[int] = await run_script(self.scripts.complete, keys, arguments)
        return [bool(outcome) for outcome in recorded]

    async def status(self, job_id: str) -> tuple[JobStatus, ResultRecord | None]:
        """Return where *job_id* stands and, once it finished, its result record."""
        located = await self.locate(job_id)
        if located is None:
            return JobStatus.NOT_FOUND, None
        state, detail = await run_script(self.scripts.status, self._route(located), [located])
        if state == b"finished":
            record = ResultRecord.model_validate_json(detail)
            return status_of(record), record
        return _STATES[state], None

    async def wait(self, job_id: str, timeout: float | None, *, may_be_missing: bool = False) -> ResultRecord:
        """Wait for *job_id* to finish; return its result record.

        With *may_be_missing* (a job still in an outbox), a job Redis does not know yet is waited for too.

        Raises:
            JobNotFoundError: the job is neither queued, running nor finished (and not *may_be_missing*).
            TimeoutError: *timeout* seconds passed first; the message says where the job stands.
        """
        if timeout is not None and timeout <= 0:  # a look, not a wait
            record = await self._finished_record(job_id, may_be_missing)
            if record is None:
                raise TimeoutError(await self._unfinished(job_id, timeout))
            return record
        try:
            async with asyncio.timeout(timeout):  # bounds the whole wait, subscribing included
                job_id = await self.locate(job_id) or job_id
                future = await self.results.subscribe(job_id)
                try:
                    record = await self._finished_record(job_id, may_be_missing)
                    return record or ResultRecord.model_validate_json(await future)
                finally:
                    self.results.forget(job_id, future)
        except TimeoutError as error:
            raise TimeoutError(await self._unfinished(job_id, timeout)) from error

    async def _unfinished(self, job_id: str, timeout: float | None) -> str:
        """Describe a job that did not finish in time: its status, its queue, whether a worker serves it."""
        try:
            async with asyncio.timeout(_DESCRIBE_WITHIN):  # the caller's time is up already
                located = await self.locate(job_id) or job_id
                state, body = await run_script(self.scripts.status, self._route(located), [located])
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

    async def _finished_record(self, job_id: str, may_be_missing: bool = False) -> ResultRecord | None:
        """Return the job's result record if it finished, ``None`` if it is still to come.

        Raises:
            JobNotFoundError: the job is neither queued, running nor finished (and not *may_be_missing*).
        """
        state, record = await self.status(job_id)
        if state is JobStatus.NOT_FOUND and not may_be_missing:
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
        located = await self.locate(job_id)
        if located is None:
            raise JobNotFoundError(f"no job {job_id} to abort")
        job_id = located
        while True:
            body = await self.redis.get(self.layout.job_key(JOB_PREFIX, job_id))
            envelope = envelope_of(body)
            queue = envelope.queue if envelope else ""
            # An unreadable body (a legacy pickled arq job) names no queue: look for it in every queue,
            # those arq-mediator never enqueued on included (a rare case: a scan is affordable here). On a
            # cluster the id's tag names the one queue it can be on.
            if self.layout.cluster:
                queues = [tag_of(job_id) or ""] if body else []
            else:
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
            outcome = await run_script(
                self.scripts.abort,
                self._route(job_id),
                [job_id, body or "", stored_json(record), keep_ms, *queues],
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
        located = await self.locate(job_id)
        raw = None if located is None else await self.redis.get(self.layout.job_key(RESULT_PREFIX, located))
        record = None if raw is None else ResultRecord.model_validate_json(raw)
        if located is None or record is None or record.ok or record.job is None:
            raise JobNotFoundError(f"no failed job {job_id} with its envelope is kept; nothing to requeue")
        fresh = record.job.model_copy(update={"failures": 0, "due_at": now_ms()})
        requeued = await run_script(
            self.scripts.requeue, self._route(located), [located, fresh.queue, stored_json(fresh)]
        )
        return fresh.queue, bool(requeued)

    async def close(self) -> None:
        """Stop waiting for results, and the best-effort writes still being tried in the background."""
        for retry in self._retrying.values():  # they would outlive the connection pool
            retry.cancel()
        await asyncio.gather(*self._retrying.values(), return_exceptions=True)
        self._retrying.clear()
        await self.results.close()


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
