"""An in-memory job store with the producer's surface of `JobClient` and the worker's fenced writes.

It keeps what Redis keeps (job envelopes as JSON text, due times, leases, result records as JSON text,
the failed jobs of each queue) and answers as the Lua scripts do, so handles, `requeue`, `failed_jobs` and
`stats` behave as against Redis. Time is the store's own clock: real time plus however far a test moved it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._claims import Claim
from .._envelope import ErrorRecord, JobEnvelope, ResultRecord, qualified_name, stored_json
from .._errors import JobAbortedError, JobNotFoundError, QueueNotConnectedError
from .._handle import JobStatus
from .._jobs import ADDED, ALREADY_FINISHED, ALREADY_QUEUED, JobClient, now_ms, status_of
from .._outcomes import ABORT_ASKED, DONE, NOT_HELD, Outcomes
from .._policy import KEEP_FAILED, Durability
from .._queue_introspection import QueueStats, Stats

if TYPE_CHECKING:
    from .._jobs import PendingJob
    from .._queue_introspection import WorkerState
    from ._local import LocalQueue

# The name the local queue's runner records as the worker of every try.
LOCAL_WORKER = "local-queue"


@dataclass(slots=True)
class StoredJob:
    """A job not finished yet: queued, deferred (or waiting for a retry), or running under `claim`."""

    id: str
    queue: str
    body: str
    due: int
    order: int
    deliveries: int = 0
    claim: Claim | None = None
    abort_asked: bool = False
    task: asyncio.Task[None] | None = None


class LocalJobClient(JobClient):
    """Keep jobs in memory and answer the producer's calls as `JobClient` does against Redis.

    Args:
        keep_failed: Seconds a failed job's record is kept (the mediator's setting).
    """

    # No worker process serves a local queue: the producer's "no live worker" warning does not apply.
    has_workers = False

    def __init__(
        self,
        *,
        keep_failed: float = KEEP_FAILED,
        errors: Mapping[str, type[BaseException]] | None = None,
    ) -> None:
        # No Redis: nothing of the base class's connection state is set up.
        self.keep_failed = keep_failed
        self.errors = errors if errors is not None else {}
        self.jobs: dict[str, StoredJob] = {}
        self._results: dict[str, tuple[str, int]] = {}
        self._failed: dict[str, dict[str, int]] = {}
        self._queues: set[str] = set()
        self._waiting: dict[str, list[asyncio.Future[str]]] = {}
        self._order = itertools.count()
        self._tokens = itertools.count(1)
        self._offset_ms = 0
        # The queue that runs this store's jobs, for `drain` to find through the mediator.
        self.queue: LocalQueue | None = None

    # The clock ----------------------------------------------------------------------------------------

    def now(self) -> int:
        """Return the store's time in ms: the wall clock plus how far it was moved forward."""
        return now_ms() + self._offset_ms

    def advance(self, milliseconds: int) -> None:
        """Move the store's clock *milliseconds* forward."""
        self._offset_ms += max(milliseconds, 0)

    # The producer's side ------------------------------------------------------------------------------

    async def push(
        self, jobs: list[PendingJob], durability: Durability | None = None
    ) -> list[tuple[int, str, str]]:
        """Add each job unless its id is queued, running or finished; answer as `JobClient.push`.

        In memory there are no replicas to wait for: *durability* is accepted and met at once.
        """
        answers = []
        for job in jobs:
            existing = self.jobs.get(job.id)
            record = self._record(job.id)
            if existing is not None:
                envelope = JobEnvelope.model_validate_json(existing.body)
                answers.append((ALREADY_QUEUED, existing.queue, envelope.type))
            elif record is not None:
                answers.append((ALREADY_FINISHED, record.queue, record.type))
            else:
                self._add(job.id, job.queue, job.body, self.now() + job.delay_ms)
                answers.append((ADDED, job.queue, ""))
        return answers

    def _add(self, job_id: str, queue: str, body: str, due: int) -> None:
        self.jobs[job_id] = StoredJob(job_id, queue, body, due, next(self._order))
        self._queues.add(queue)

    async def enqueue_tick(self, schedule: str, tick_ms: int, job: PendingJob) -> bool:
        """Refuse: schedules tick in workers; a test runs a recurring job with ``mediator.trigger(name)``."""
        raise NotImplementedError("a local queue runs no schedules; use `await mediator.trigger(name)`")

    async def status(self, job_id: str) -> tuple[JobStatus, ResultRecord | None]:
        """Return where *job_id* stands and, once it finished, its result record."""
        record = self._record(job_id)
        if record is not None:
            return status_of(record), record
        job = self.jobs.get(job_id)
        if job is None:
            return JobStatus.NOT_FOUND, None
        if job.claim is not None:
            return JobStatus.IN_PROGRESS, None
        return (JobStatus.DEFERRED if job.due > self.now() else JobStatus.QUEUED), None

    async def wait(self, job_id: str, timeout: float | None, *, may_be_missing: bool = False) -> ResultRecord:
        """Wait for *job_id* to finish; return its result record.

        Raises:
            JobNotFoundError: the job is neither queued, running nor finished (and not *may_be_missing*).
            TimeoutError: *timeout* passed first; the message says where the job stands.
        """
        state, record = await self.status(job_id)
        if record is not None:
            return record
        if state is JobStatus.NOT_FOUND and not may_be_missing:
            raise JobNotFoundError(f"no job {job_id} is queued, running or finished (results expire)")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, []).append(future)
        try:
            async with asyncio.timeout(timeout):
                return ResultRecord.model_validate_json(await future)
        except TimeoutError as error:
            state, _ = await self.status(job_id)
            queue = self.jobs[job_id].queue if job_id in self.jobs else "?"
            raise TimeoutError(
                f"job {job_id} did not finish within {timeout}s: it is {state.value} on queue {queue!r} of a "
                "local queue, where jobs run only in `await queue.run_all()` (or `run_ready()`)"
            ) from error
        finally:
            waiters = self._waiting.get(job_id, [])
            if future in waiters:
                waiters.remove(future)

    async def abort(self, job_id: str, keep_ms: int) -> bool:
        """Remove *job_id* if it is not running, else cancel its try; ``False`` when it had finished.

        Raises:
            JobNotFoundError: no such job exists.
        """
        if self._record(job_id) is not None:
            return False
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job {job_id} to abort")
        if job.claim is not None:
            job.abort_asked = True
            if job.task is not None and not (job.claim.settling or job.claim.aborting):
                job.claim.aborting = True
                job.task.cancel()
            return True
        envelope = JobEnvelope.model_validate_json(job.body)
        record = ResultRecord(
            id=job_id,
            queue=job.queue,
            ok=False,
            type=envelope.type,
            error=ErrorRecord(type=qualified_name(JobAbortedError), message="aborted before it started"),
            job=envelope,
            finished_at=now_ms(),
        )
        del self.jobs[job_id]
        self._finish(job_id, job.queue, stored_json(record), keep_ms, failed=True)
        return True

    async def requeue(self, job_id: str) -> tuple[str, bool]:
        """Put a failed job back on its queue with all its tries; return its queue and whether it was.

        Raises:
            JobNotFoundError: no failed job with that id is kept.
        """
        record = self._record(job_id)
        if record is None or record.ok or record.job is None:
            raise JobNotFoundError(f"no failed job {job_id} with its envelope is kept; nothing to requeue")
        fresh = record.job.model_copy(update={"failures": 0, "due_at": now_ms()})
        if job_id in self.jobs:
            return fresh.queue, False
        self._add(job_id, fresh.queue, stored_json(fresh), self.now())
        self._results.pop(job_id, None)
        self._failed.get(fresh.queue, {}).pop(job_id, None)
        return fresh.queue, True

    async def failed(self, queue: str, limit: int = 100) -> list[ResultRecord]:
        """Return the most recent failed jobs of *queue*, newest first."""
        kept = self._failed.get(queue, {})
        for job_id in [job_id for job_id, until in kept.items() if until <= self.now()]:
            del kept[job_id]
        newest = sorted(kept, key=kept.__getitem__, reverse=True)[: max(limit, 0)]
        return [record for job_id in newest if (record := self._record(job_id)) is not None]

    async def workers(self) -> list[WorkerState]:
        """Return no workers: a local queue runs jobs in the test's own task."""
        return []

    async def queue_names(self) -> set[str]:
        """Return every queue a job was enqueued on."""
        return set(self._queues)

    async def stats(self, known_queues: set[str]) -> Stats:
        """Return ready, running, deferred and failed counts for *known_queues* and every used queue."""
        now = self.now()
        counts: dict[str, list[int]] = {name: [0, 0, 0, 0] for name in known_queues | self._queues}
        for job in self.jobs.values():
            column = 1 if job.claim is not None else 2 if job.due > now else 0
            counts[job.queue][column] += 1
        for name in counts:
            counts[name][3] = len(await self.failed(name, limit=len(self._failed.get(name, {}))))
        queues = [QueueStats(name, *counts[name]) for name in sorted(counts)]
        return Stats(queues=queues, workers=[])

    async def close(self) -> None:
        """Stop waiting for results: pending waits raise `QueueNotConnectedError`."""
        for waiters in self._waiting.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(QueueNotConnectedError("the local queue closed while waiting"))
        self._waiting.clear()

    def _record(self, job_id: str) -> ResultRecord | None:
        kept = self._results.get(job_id)
        if kept is None:
            return None
        raw, until = kept
        if until <= self.now():  # expired, as Redis would have dropped it
            del self._results[job_id]
            return None
        return ResultRecord.model_validate_json(raw)

    def _finish(self, job_id: str, queue: str, record: str, keep_ms: int, *, failed: bool) -> None:
        until = self.now() + keep_ms
        self._results[job_id] = (record, until)
        if failed:
            self._failed.setdefault(queue, {})[job_id] = until
        for future in self._waiting.pop(job_id, []):
            if not future.done():
                future.set_result(record)

    # The worker's side --------------------------------------------------------------------------------

    def claim_due(self, queues: list[str] | None, limit: int) -> list[Claim]:
        """Lease up to *limit* due jobs: of *queues* in that priority order, else of any queue by due time."""
        now = self.now()
        ready = [job for job in self.jobs.values() if job.claim is None and job.due <= now]
        if queues is not None:
            rank = {name: position for position, name in enumerate(queues)}
            ready = [job for job in ready if job.queue in rank]
            ready.sort(key=lambda job: (rank[job.queue], job.due, job.order))
        else:
            ready.sort(key=lambda job: (job.due, job.order))
        claims = []
        for job in ready[:limit]:
            job.deliveries += 1
            job.claim = Claim(
                id=job.id,
                key_id=job.id.encode(),
                queue=job.queue,
                token=f"{LOCAL_WORKER}.{next(self._tokens)}",
                deliveries=job.deliveries,
                due_at=job.due,
                claimed_at=now,
                body=job.body.encode(),
            )
            claims.append(job.claim)
        return claims

    def next_due(self, queues: list[str] | None) -> int | None:
        """Return when (ms, store time) the next job not running becomes due, or ``None`` if none waits."""
        waiting = [
            job.due
            for job in self.jobs.values()
            if job.claim is None and (queues is None or job.queue in queues)
        ]
        return min(waiting, default=None)

    def _held(self, claim: Claim) -> StoredJob | None:
        job = self.jobs.get(claim.id)
        return job if job is not None and job.claim is claim else None

    def settle(self, claim: Claim, record: ResultRecord, keep_ms: int, *, failed: bool) -> bool:
        """Store a finished try's record as JSON and forget the job; ``False`` if *claim* lost it."""
        if self._held(claim) is None:
            return False
        del self.jobs[claim.id]
        self._finish(record.id, claim.queue, stored_json(record), keep_ms, failed=failed)
        return True

    def put_back(self, claim: Claim, body: str | None, delay_ms: int) -> int:
        """Return a try's job to its queue, due in *delay_ms*: retried (*body*) or given back untried."""
        job = self._held(claim)
        if job is None:
            return NOT_HELD
        if job.abort_asked:
            return ABORT_ASKED
        if body is None:  # given back untried: this delivery does not count
            job.deliveries -= 1
        else:
            job.body = body
        job.claim, job.task = None, None
        job.due = self.now() + delay_ms
        return DONE


class LocalOutcomes(Outcomes):
    """Write a local runner's outcomes straight into a `LocalJobClient`, fenced by each claim as in Redis."""

    def __init__(self, store: LocalJobClient) -> None:
        super().__init__(store, LOCAL_WORKER, lease=10.0, give_up_after=lambda: False)
        self._store = store

    async def complete(
        self, claim: Claim, record: ResultRecord, keep_seconds: float, *, failed: bool
    ) -> bool:
        """Store a finished job's result record; return whether it was recorded (the claim held)."""
        claim.settling = True
        recorded = self._store.settle(claim, record, int(keep_seconds * 1000), failed=failed)
        if not recorded:
            self._dropped(claim, "its result")
        return recorded

    async def retry(self, claim: Claim, body: str, delay_ms: int, *, reason: str = "") -> int:
        """Put the job back for another try after *delay_ms*; return DONE, NOT_HELD or ABORT_ASKED."""
        claim.settling = True
        return self._store.put_back(claim, body, delay_ms)

    async def release(self, claim: Claim, delay_ms: int = 0) -> int:
        """Give the job back untried, due again after *delay_ms*; return DONE, NOT_HELD or ABORT_ASKED."""
        return self._store.put_back(claim, None, delay_ms)
