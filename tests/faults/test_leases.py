"""Fenced leases: a worker that stalls past its lease can neither overwrite nor resurrect a job."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from redis.asyncio import Redis

from arq_mediator import JobFailedError, JobHandle, JobStatus, Mediator
from tests.jobs.process_app import Chore, Doomed, Work, runs_key
from tests.jobs.worker_processes import Workers, wait_for_workers, wait_until
from tests.processes import ManagedProcess

from .conftest import printed

LEASE: dict[str, Any] = {"lease": 1.5, "heartbeat": 0.3}


async def runs(redis: Redis, job_id: str) -> int:
    """Return how many times a handler started for *job_id*."""
    return int(await redis.get(runs_key(job_id)) or 0)


async def started_by_a_worker(
    app: Mediator, workers: Workers, request: Work
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


async def _at_least(redis: Redis, job_id: str, count: int) -> bool:
    return await runs(redis, job_id) >= count
