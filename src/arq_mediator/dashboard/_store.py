"""The dashboard's data: `RedisDashboardSource` reads a mediator's Redis (queues, workers, history).

Every list is a range on a sorted set (a history index, a queue, a running set), paged, never a scan of
keys; each call is one or two round trips whatever the number of jobs retained. It imports no web framework.
Here are the counts, the queue overview and the actions; reads of single jobs and finished pages are in
`_job_reads`, lists of unfinished jobs in `_active`, the recurring jobs' list in `_recurring`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from .._envelope import stored_json
from .._errors import JobNotFoundError
from .._history import FINISHED_STATES, RETRYING_KEY, TYPES_KEY, index_key, shared_keys
from .._jobs import now_ms
from .._keys import QUEUE_PREFIX, QUEUES_KEY
from .._layout import run_script
from .._scripts import render, with_history
from ._active import ActiveLists
from ._bulk import apply_to_all
from ._events import job_events
from ._job_reads import JobReads
from ._lua import DELETE, TRIM
from ._model import (
    DashboardEvent,
    JobDetail,
    JobState,
    JobSummary,
    Page,
    QueueSummary,
    RecurringSummary,
    Resolution,
    StateCounts,
    ThroughputPoint,
    WorkerSummary,
)
from ._records import text, worker_summary_of
from ._recurring import recurring_summaries
from ._throughput import throughput_points

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .._jobs import JobClient
    from .._mediator import Mediator

logger = logging.getLogger("arq_mediator.dashboard")

# The longest job id the store looks up; anything longer is no id a job was given.
MAX_ID_LENGTH = 1024
# Seconds between two trims `counts` makes (for when no job finished lately to trim on its way).
TRIM_EVERY = 10.0
# The most rows one page holds.
MAX_PAGE = 500


class RedisDashboardSource:
    """The `DashboardSource` of a mediator: what its Redis holds of queues, workers and job history.

    The mediator must be open (``async with mediator``) while the store is used. Listing finished jobs,
    their steps, logs and the throughput graphs needs the mediator's history on (`JobHistory`); without
    it those lists are empty and the rest still works.

    Args:
        mediator: The mediator whose jobs to show; its recurring jobs are the ones listed and triggered.
        scan_limit: The most queue entries a list of waiting or running jobs filtered by request type
            reads (those states have no index per type), so one such page stays bounded.
    """

    def __init__(self, mediator: Mediator, *, scan_limit: int = 2000) -> None:
        if scan_limit < 1:
            raise ValueError(f"scan_limit must be at least 1, got {scan_limit}")
        self._mediator = mediator
        self._scan_limit = scan_limit
        self._scripts: dict[int, tuple[Any, Any]] = {}
        self._trimmed_at = -TRIM_EVERY

    @property
    def _jobs(self) -> JobClient:
        return self._mediator._jobs

    @property
    def _redis(self) -> Redis:
        return self._jobs.redis

    def _reads(self) -> JobReads:
        return JobReads(self._redis, self._jobs.layout)

    def _own_scripts(self) -> tuple[Any, Any]:
        """Return the store's TRIM and DELETE scripts for the current client (registered on first use)."""
        jobs = self._jobs
        scripts = self._scripts.get(id(jobs))
        if scripts is None:
            rendered = [render(with_history(body), jobs.channels, jobs.history) for body in (TRIM, DELETE)]
            registered = tuple(jobs.redis.register_script(source) for source in rendered)
            scripts = self._scripts[id(jobs)] = (registered[0], registered[1])
        return scripts

    # Overview -----------------------------------------------------------------------------------------

    async def counts(self) -> StateCounts:
        """Return how many jobs are in each state now; finished states count what history retains."""
        await self._trim_now_and_then()
        layout = self._jobs.layout
        queues = sorted(await self._all_queues()) if layout.cluster else []
        spread = [shared_keys(index_key(state), layout, queues) for state in FINISHED_STATES]
        spread.append(shared_keys(RETRYING_KEY, layout, queues))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.smembers(QUEUES_KEY)
            for keys in spread[:-1]:
                for key in keys:
                    pipe.zcard(key)
            for key in spread[-1]:
                pipe.zcount(key, f"({now_ms()}", "+inf")
            names, *replies = await pipe.execute()
        # On a cluster each queue keeps its own indexes: their counts add up.
        totals = iter(replies)
        succeeded, failed, aborted, retrying = (sum(next(totals) for _ in keys) for keys in spread)
        queues = sorted(self._mediator._known_queues() | {text(name) for name in names})
        counts = await self._jobs.queue_counts(queues)
        ready, running, deferred = (sum(counts[offset::4]) for offset in range(3))
        return StateCounts(
            enqueued=ready,
            scheduled=max(deferred - retrying, 0),
            running=running,
            retrying=retrying,
            succeeded=succeeded,
            failed=failed,
            aborted=aborted,
        )

    async def _trim_now_and_then(self) -> None:
        """Trim the finished-job indexes, at most every `TRIM_EVERY` seconds (jobs finishing trim too)."""
        clock = time.monotonic()
        if clock - self._trimmed_at < TRIM_EVERY:
            return
        self._trimmed_at = clock
        trim, _ = self._own_scripts()
        if not self._jobs.layout.cluster:
            await trim(args=[])
            return
        for queue in sorted(await self._all_queues()):  # each queue's indexes, in its own slot
            await run_script(trim, self._jobs.layout.route(queue), [])

    async def throughput(self, resolution: Resolution, points: int) -> list[ThroughputPoint]:
        """Return succeeded and failed counts for the last *points* intervals of *resolution*, oldest first.

        Raises:
            ValueError: an unknown resolution, or *points* not from 1 to 10,000.
        """
        layout = self._jobs.layout
        queues = sorted(await self._all_queues()) if layout.cluster else []
        return await throughput_points(
            self._redis, resolution, points, now_ms(), lambda key: shared_keys(key, layout, queues)
        )

    async def queues(self) -> list[QueueSummary]:
        """Return every known queue with its counts and the workers serving it (highest priority first)."""
        stats = await self._jobs.stats(self._mediator._known_queues())
        summaries = []
        for queue in stats.queues:
            serving = sorted(
                (worker for worker in stats.workers if queue.name in worker.queues),
                key=lambda worker: (list(worker.queues).index(queue.name), worker.name),
            )
            summaries.append(
                QueueSummary(
                    name=queue.name,
                    ready=queue.ready,
                    scheduled=queue.deferred,
                    running=queue.running,
                    failed=queue.failed,
                    workers=[worker.name for worker in serving],
                )
            )
        return summaries

    # Jobs ---------------------------------------------------------------------------------------------

    async def jobs(
        self,
        state: JobState,
        *,
        queue: str | None = None,
        request_type: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[JobSummary]:
        """Return one page of the jobs in *state*, newest first, narrowed to a queue and a request type.

        Raises:
            ValueError: a negative offset, or a limit not from 1 to `MAX_PAGE`.
        """
        state = JobState(state)
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise ValueError(
                f"offset must be 0 or more and limit from 1 to {MAX_PAGE}; got {offset}, {limit}"
            )
        if state.value in FINISHED_STATES:
            cluster = self._jobs.layout.cluster
            indexes = [queue] if queue else sorted(await self._all_queues()) if cluster else []
            return await self._reads().finished(state, queue, request_type, indexes, offset, limit)
        queues = [queue] if queue else sorted(await self._all_queues())
        lists = ActiveLists(self._redis, self._scan_limit, self._jobs.layout)
        ids, total = await lists.page(state, queues, request_type, offset, limit)
        return Page(await self.summaries(ids, state), total, offset, limit)

    async def summaries(self, job_ids: list[str], state: JobState) -> list[JobSummary]:
        """Return the list rows of *job_ids* in *state*, leaving out jobs nothing is kept of."""
        return await self._reads().summaries(job_ids, state)

    async def request_types(self) -> list[str]:
        """Return every request type the history has seen or the mediator has a handler for, sorted."""
        seen: set[bytes] = await self._redis.smembers(TYPES_KEY)  # type: ignore[misc]
        return sorted({text(name) for name in seen} | set(self._mediator._registry.registered_names()))

    async def job(self, job_id: str) -> JobDetail | None:
        """Return everything known of *job_id*; ``None`` for an id no job has (or no id at all)."""
        if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_ID_LENGTH:
            return None
        located = await self._jobs.locate(job_id)
        if located is None:
            return None
        return await self._reads().detail(located)

    # Workers and recurring jobs -----------------------------------------------------------------------

    async def workers(self) -> list[WorkerSummary]:
        """Return every live worker; one whose heartbeat expired is gone from the list."""
        now = now_ms()
        return [worker_summary_of(worker, now) for worker in await self._jobs.workers()]

    async def recurring(self) -> list[RecurringSummary]:
        """Return the mediator's recurring jobs: schedule, next and last run, and how the last one ended."""
        return await recurring_summaries(self._mediator, self._redis, self._jobs.layout)

    # Actions ------------------------------------------------------------------------------------------

    async def requeue(self, job_id: str) -> bool:
        """Run a job again: a finished one as a fresh job with all its tries, a waiting one now.

        Returns:
            ``False`` when it runs now, or nothing is kept to rebuild it from, or no job has that id.
        """
        detail = await self.job(job_id)
        if detail is None or detail.summary.state is JobState.RUNNING:
            return False
        queue, job_id, layout = detail.summary.queue, detail.summary.id, self._jobs.layout
        if detail.summary.state.value not in FINISHED_STATES:  # waiting: make it due now
            queue_key, wake = layout.key(QUEUE_PREFIX, queue, queue), self._jobs.channels.wake(queue)
            if layout.cluster:  # a sharded wake-up, on the node of the queue's slot
                moved = await self._redis.zadd(queue_key, {job_id: now_ms()}, xx=True, ch=True)
                await self._redis.execute_command("SPUBLISH", wake, now_ms())  # type: ignore[no-untyped-call]
                return bool(moved)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(queue_key, {job_id: now_ms()}, xx=True, ch=True)
                pipe.publish(wake, now_ms())
                moved, _ = await pipe.execute()
            return bool(moved)
        envelope = await self._reads().kept_envelope(job_id)
        if envelope is None:
            return False
        fresh = envelope.model_copy(update={"failures": 0, "due_at": now_ms()})
        arguments = [job_id, fresh.queue, stored_json(fresh)]
        route = layout.route(fresh.queue) if layout.cluster else []
        return bool(await run_script(self._jobs.scripts.requeue, route, arguments))

    async def delete(self, job_id: str) -> bool:
        """Delete a job that is not running, and everything kept of it; ``False`` when none was deleted."""
        if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_ID_LENGTH:
            return False
        detail = await self.job(job_id)
        queue = detail.summary.queue if detail is not None else ""
        _, delete = self._own_scripts()
        if not self._jobs.layout.cluster:
            return int(await delete(args=[job_id, queue])) == 1
        if detail is None:  # on a cluster a job is found by its id's tag, or not at all
            return False
        job_id = detail.summary.id
        return int(await run_script(delete, self._jobs.layout.route(queue), [job_id, queue])) == 1

    async def abort(self, job_id: str) -> bool:
        """Abort a job: remove it if it has not started, else ask its worker to cancel it.

        Returns:
            ``False`` when it had finished already or no job has that id.
        """
        if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_ID_LENGTH:
            return False
        try:
            return await self._jobs.abort(job_id, int(self._mediator.keep_failed * 1000))
        except JobNotFoundError:
            return False

    async def bulk(
        self, action: Literal["requeue", "delete", "abort"], state: JobState, queue: str | None = None
    ) -> int:
        """Apply *action* to every job in *state* (of *queue*), `BULK_BATCH` at a time, `BULK_LIMIT` at most.

        Returns:
            How many jobs it applied to (call again for the rest past the limit).

        Raises:
            ValueError: an unknown action.
        """
        return await apply_to_all(self, action, state, queue)

    async def trigger(self, name: str) -> str:
        """Enqueue recurring job *name* now; return the new job's id.

        Raises:
            KeyError: no recurring job has that name.
        """
        handle = await self._mediator.trigger(name)
        return handle.id

    # Live events --------------------------------------------------------------------------------------

    def events(self) -> AsyncIterator[DashboardEvent]:
        """Yield each job state change the engine publishes, for as long as the caller iterates.

        A Redis error does not end it: it subscribes again, with backoff, and goes on (changes published
        meanwhile are missed, so a page should reload its data when the stream resumes).
        """
        return job_events(self._redis, self._jobs.channels, self._all_queues)

    async def _all_queues(self) -> set[str]:
        """Return every queue a job can be on: the registry's and the ones jobs were enqueued on."""
        return self._mediator._known_queues() | await self._jobs.queue_names()
