"""Fenced leases: a worker that stalls past its lease can neither overwrite nor resurrect a job."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from arq.jobs import Job as ArqJob
from arq.jobs import JobStatus as ArqStatus
from redis.asyncio import Redis

from arq_mediator import JobFailedError, JobHandle, JobStatus, Mediator, QueueStats
from tests.jobs.process_app import Block, Chore, Doomed, Work, gate_key, runs_key
from tests.jobs.waiting import polled
from tests.jobs.worker_processes import Workers, wait_for_workers, wait_until
from tests.keys import queue_key, running_key
from tests.processes import ManagedProcess

from .conftest import printed

LEASE: dict[str, Any] = {"lease": 1.5, "heartbeat": 0.3}


async def runs(redis: Redis, job_id: str) -> int:
    """Return how many times a handler started for *job_id*."""
    return int(await redis.get(runs_key(job_id)) or 0)


async def started_by_a_worker(
    app: Mediator, workers: Workers, request: Work | Block
) -> tuple[ManagedProcess, JobHandle[str]]:
    """Start the worker that will stall, enqueue *request*, and return both once its handler started."""
    stalled = workers.start("stalled", ["default"], max_jobs=1, **LEASE)
    await wait_for_workers(app, "stalled", diagnose=workers.logs)
    handle = await app.enqueue(request)
    await wait_until(lambda: runs(app._jobs.redis, handle.id), "the job to start", diagnose=workers.logs)
    return stalled, handle


async def test_a_stalled_worker_cannot_overwrite_the_result_of_the_worker_that_took_over(
    app: Mediator, workers: Workers
) -> None:
    """A worker frozen past its lease finds its result refused: the job's record is the new holder's."""
    redis = app._jobs.redis
    stalled, handle = await started_by_a_worker(app, workers, Chore(duration=2.0, tag="slow"))

    os.kill(stalled.pid, signal.SIGSTOP)  # a GC pause, a VM freeze: the lease lapses meanwhile
    try:
        workers.start("rescuer", ["default"], max_jobs=1, **LEASE)
        await wait_until(
            lambda: _at_least(redis, handle.id, 2), "the rescuer to take over", diagnose=workers.logs
        )
    finally:
        os.kill(stalled.pid, signal.SIGCONT)

    assert await handle.result(timeout=10) == "slow@rescuer"
    # The stalled worker wakes with its try done or nearly done: whatever it writes now is refused.
    await printed(stalled, "passed to another claim")
    record = await handle.record()
    assert record is not None
    assert (record.worker, await handle.status()) == ("rescuer", JobStatus.SUCCEEDED)
    assert await runs(redis, handle.id) == 2


async def test_a_stalled_worker_cannot_retry_a_job_another_worker_settled(
    app: Mediator, workers: Workers
) -> None:
    """A frozen worker's retry of a job that another worker already failed for good is refused."""
    redis = app._jobs.redis
    stalled, handle = await started_by_a_worker(app, workers, Doomed(duration=1.0, tag="doomed"))

    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        workers.start("rescuer", ["default"], max_jobs=1, **LEASE)
        # The rescuer runs both tries of the job (its first retried at once, then failed for good).
        await wait_until(lambda: _at_least(redis, handle.id, 3), "two tries by the rescuer")

        async def failed() -> bool:
            return await handle.status() is JobStatus.FAILED

        await wait_until(failed, "the job to fail for good", diagnose=workers.logs)
    finally:
        os.kill(stalled.pid, signal.SIGCONT)

    await printed(stalled, "passed to another claim")
    record = await handle.record()
    assert record is not None
    assert (record.worker, record.try_number) == ("rescuer", 2)
    # Nothing brought the job back: no fourth run, and it stays failed.
    assert await runs(redis, handle.id) == 3
    assert await handle.status() is JobStatus.FAILED
    with pytest.raises(JobFailedError, match="doomed try 2"):
        await handle.result(timeout=1)


async def test_a_running_job_is_off_its_queue_and_comes_back_when_its_worker_dies(
    app: Mediator, workers: Workers
) -> None:
    """A claimed job leaves its queue for the running set, and arq still reads it as in progress; when its
    worker is SIGKILLed it counts as ready once the lease lapses, and the next claim puts it back and runs it.
    """
    redis = app._jobs.redis
    doomed, handle = await started_by_a_worker(app, workers, Block(gate="lapse"))
    arq_view = ArqJob(handle.id, redis, _queue_name=queue_key("default"))
    assert await redis.zscore(queue_key("default"), handle.id) is None
    assert await redis.zscore(running_key("default"), handle.id) is not None
    assert await arq_view.status() is ArqStatus.in_progress
    assert await handle.status() is JobStatus.IN_PROGRESS
    assert await default_queue(app) == QueueStats(name="default", ready=0, running=1, deferred=0, failed=0)

    os.kill(doomed.pid, signal.SIGKILL)
    assert await doomed.exited(timeout=5.0) == -signal.SIGKILL

    def lapsed(queue: QueueStats) -> bool:
        return (queue.ready, queue.running) == (1, 0)

    await polled(lambda: default_queue(app), lapsed, what="the dead worker's lease to lapse")
    # The count reads the running set's score, the status the lease key's expiry: both are the claim's
    # deadline, but Redis expires a key only once its millisecond has passed, so the two may differ by one.
    await polled(handle.status, lambda status: status is JobStatus.QUEUED, timeout=1.0, what="status queued")
    await redis.set(gate_key("lapse"), 1)
    workers.start("rescuer", ["default"], max_jobs=1, **LEASE)
    assert await handle.result(timeout=10) == "lapse@rescuer"
    assert await runs(redis, handle.id) == 2
    assert await arq_view.status() is ArqStatus.complete
    assert await redis.zcard(running_key("default")) == 0
    assert await redis.zcard(queue_key("default")) == 0


async def default_queue(app: Mediator) -> QueueStats:
    """Return the counts of the ``default`` queue."""
    stats = await app.stats()
    return next(queue for queue in stats.queues if queue.name == "default")


async def _at_least(redis: Redis, job_id: str, count: int) -> bool:
    return await runs(redis, job_id) >= count
