"""What only the in-memory queue does: its own clock, queue priorities, and its limits stated plainly."""

from __future__ import annotations

import asyncio

import pytest

from arq_mediator import (
    JobNotFoundError,
    JobStatus,
    Mediator,
    QueueNotConnectedError,
    Request,
)
from arq_mediator.testing import drain, local_queue


class Step(Request[str]):
    name: str


def recording(mediator: Mediator, ran: list[str], keep_result: float | None = None) -> None:
    """Register a Step handler that records each step it runs, keeping results *keep_result* seconds."""

    @mediator.handler(keep_result=keep_result)
    async def step(request: Step) -> str:
        ran.append(request.name)
        return request.name


async def test_higher_priority_queues_run_first(mediator: Mediator) -> None:
    """With queues in priority order, every ready job of the first runs before the next queue's."""
    ran: list[str] = []
    recording(mediator, ran)
    async with local_queue(mediator, queues=["critical", "default"]) as queue:
        await mediator.enqueue(Step(name="default 1"))
        await mediator.enqueue(Step(name="critical 1"), queue="critical")
        await mediator.enqueue(Step(name="default 2"))
        await mediator.enqueue(Step(name="critical 2"), queue="critical")
        assert await queue.run_all() == 4
    assert ran == ["critical 1", "critical 2", "default 1", "default 2"]


async def test_a_queue_not_served_keeps_its_jobs(mediator: Mediator) -> None:
    """Jobs on a queue the local queue does not serve stay queued, as with no worker for it."""
    ran: list[str] = []
    recording(mediator, ran)
    async with local_queue(mediator, queues=["critical"]) as queue:
        job = await mediator.enqueue(Step(name="unserved"))
        assert await queue.run_all() == 0
        assert await job.status() is JobStatus.QUEUED
        stats = await mediator.stats()
    assert [(q.name, q.ready) for q in stats.queues] == [("default", 1)]
    assert ran == []


async def test_run_ready_leaves_deferred_jobs_until_the_clock_reaches_them(mediator: Mediator) -> None:
    """run_ready runs only what is due; advance moves the queue's clock so a deferred job comes due."""
    ran: list[str] = []
    recording(mediator, ran)
    async with local_queue(mediator) as queue:
        job = await mediator.defer(Step(name="in an hour"), by=3600)
        assert await queue.run_ready() == 0
        assert (await mediator.stats()).totals["deferred"] == 1
        queue.advance(3599)
        assert await queue.run_ready() == 0
        queue.advance(1)
        assert await queue.run_ready() == 1
        assert await job.result(timeout=0) == "in an hour"


async def test_retries_wait_out_their_backoff_on_the_queues_clock(mediator: Mediator) -> None:
    """Without a retry delay, a retry waits its backoff: run_ready leaves it, run_all gets to it at once."""
    ran: list[str] = []

    @mediator.handler(max_tries=2)
    async def step(request: Step) -> str:
        ran.append(request.name)
        if len(ran) == 1:
            raise ConnectionError("retry me")
        return request.name

    async with local_queue(mediator) as queue:
        job = await mediator.enqueue(Step(name="again"))
        assert await queue.run_ready() == 1
        assert await job.status() is JobStatus.DEFERRED
        assert await queue.run_all() == 1
        assert await job.result(timeout=0) == "again"


async def test_waiting_for_a_job_nobody_runs_says_how_to_run_it(mediator: Mediator) -> None:
    """result() on a job still queued times out naming its status, its queue and run_all."""
    recording(mediator, [])
    async with local_queue(mediator):
        job = await mediator.enqueue(Step(name="waiting"))
        with pytest.raises(TimeoutError, match=r"it is queued on queue 'default' .*run_all\(\)"):
            await job.result(timeout=0.01)


async def test_closing_the_queue_ends_waits_and_restores_the_mediator(mediator: Mediator) -> None:
    """Leaving the block fails pending waits and puts back the mediator's own (absent) connection."""
    recording(mediator, [])
    async with local_queue(mediator):
        job = await mediator.enqueue(Step(name="left"))
        waiting = asyncio.create_task(job.result())
        await asyncio.sleep(0)  # let the wait begin before the block ends
    with pytest.raises(QueueNotConnectedError):
        await waiting
    with pytest.raises(QueueNotConnectedError):
        await mediator.enqueue(Step(name="after"))


async def test_results_expire_on_the_queues_clock(mediator: Mediator) -> None:
    """A result kept for keep_result is gone once the queue's clock passed it, as in Redis."""
    recording(mediator, [], keep_result=60.0)
    async with local_queue(mediator) as queue:
        job = await mediator.enqueue(Step(name="kept"))
        await drain(mediator)
        assert await job.result(timeout=0) == "kept"
        queue.advance(61)
        assert await job.status() is JobStatus.NOT_FOUND
        with pytest.raises(JobNotFoundError):
            await job.result(timeout=0)
        with pytest.raises(JobNotFoundError):
            await job.abort()


async def test_a_job_enqueueing_itself_forever_stops_run_all(mediator: Mediator) -> None:
    """run_all gives up with TimeoutError when jobs keep coming."""

    @mediator.handler
    async def step(request: Step) -> str:
        await mediator.enqueue(Step(name=request.name))
        return request.name

    async with local_queue(mediator) as queue:
        await mediator.enqueue(Step(name="loop"))
        with pytest.raises(TimeoutError):
            await queue.run_all(timeout=0.05)


async def test_finished_and_repeated_jobs_answer_as_in_redis(mediator: Mediator) -> None:
    """Aborting a finished job is False; requeueing a succeeded one is refused; an expired failure too."""
    recording(mediator, [])
    async with local_queue(mediator) as queue:
        job = await mediator.enqueue(Step(name="done"), job_id="done")
        await queue.run_all()
        assert not await job.abort()
        with pytest.raises(JobNotFoundError):
            await mediator.requeue("done")
        repeat = await mediator.enqueue(Step(name="done"), job_id="done")
        assert not repeat.enqueued
        assert await mediator.failed_jobs("default", limit=0) == []


async def test_a_waiting_caller_hears_the_result_as_the_job_finishes(mediator: Mediator) -> None:
    """result() awaited before the job runs returns once run_all finishes it; meanwhile it is in progress."""
    started, release = asyncio.Event(), asyncio.Event()

    @mediator.handler
    async def step(request: Step) -> str:
        started.set()
        await release.wait()
        return request.name

    async with local_queue(mediator) as queue:
        job = await mediator.enqueue(Step(name="heard"), job_id="heard")
        repeat = await mediator.enqueue(Step(name="heard"), job_id="heard")
        assert (job.enqueued, repeat.enqueued) == (True, False)
        waiting = asyncio.create_task(job.result(timeout=5))
        running = asyncio.create_task(queue.run_all())
        async with asyncio.timeout(5):
            await started.wait()
        assert await job.status() is JobStatus.IN_PROGRESS
        release.set()
        assert await waiting == "heard"
        assert await running == 1


class OutOfStockError(Exception):
    """A registered domain error, raised again as itself from a local job's result."""


async def test_a_registered_error_is_raised_as_itself_from_a_local_job(
    mediator: Mediator, caplog: pytest.LogCaptureFixture
) -> None:
    """`register_error` works on the local queue as on Redis; and no 'no live worker' warning is logged."""
    mediator.register_error(OutOfStockError)

    @mediator.handler
    async def step(request: Step) -> str:
        raise OutOfStockError(request.name)

    async with local_queue(mediator) as queue:
        handle = await mediator.enqueue(Step(name="widget"))
        await queue.run_all()
        with pytest.raises(OutOfStockError, match="widget"):
            await handle.result(timeout=0)
    assert not [r for r in caplog.records if "no live worker" in r.getMessage()]
