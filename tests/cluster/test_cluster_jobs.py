"""Jobs on a three-master Redis Cluster: each queue in its own master's slots, one worker serving all.

The shared cluster of the module is emptied before each test. The queues' slots are fixed by their names
(`tests.cluster.app`); the first test checks that they do land on three different masters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from arq_mediator import JobAbortedError, JobFailedError, JobStatus, Mediator
from tests.jobs.conftest import running_worker
from tests.jobs.worker_processes import wait_until

from .app import QUEUES, STARTED, Flaky, High, Low, Mid
from .deployment import ClusterDeployment


async def test_each_queue_runs_its_jobs_on_its_own_master(app: Mediator, cluster: ClusterDeployment) -> None:
    """A batch spanning three masters is pushed, claimed, run and answered; each job's keys sit on its
    queue's master, and `stats` and the workers list read every node."""
    masters = {queue: (await cluster.master_of("{" + queue + "}")).port for queue in QUEUES}
    assert len(set(masters.values())) == 3
    async with running_worker(app, queues=list(QUEUES), name="everywhere"):
        handles: list[Any] = await app.enqueue_many([High(tag="h"), Mid(tag="m"), Low(tag="l")])
        assert [await handle.result(timeout=10) for handle in handles] == [
            "h@everywhere",
            "m@everywhere",
            "l@everywhere",
        ]
        stats = await app.stats()
        assert [worker.name for worker in stats.workers] == ["everywhere"]
    for handle, queue in zip(handles, ("high", "mid", "low"), strict=True):
        assert handle.id.startswith("{" + queue + "}")
        client = (await cluster.master_of("{" + queue + "}")).client()
        try:
            assert await client.exists(f"arq:result:{{{queue}}}:{handle.id}") == 1
        finally:
            await client.aclose()
    assert {queue.name for queue in stats.queues} >= set(QUEUES)


async def test_one_worker_takes_queues_on_three_nodes_in_priority_order(app: Mediator) -> None:
    """With one slot, a worker on high, mid, low runs every high job, then every mid one, then low."""
    STARTED.clear()
    low = await app.enqueue_many([Low(tag=f"l{i}") for i in range(3)])
    mid = await app.enqueue_many([Mid(tag=f"m{i}") for i in range(3)])
    high = await app.enqueue_many([High(tag=f"h{i}") for i in range(3)])
    async with running_worker(app, queues=["high", "mid", "low"], max_jobs=1, name="ordered"):
        for handle in [*high, *mid, *low]:
            await handle.result(timeout=10)
    assert [entry.partition(":")[0] for entry in STARTED] == ["high"] * 3 + ["mid"] * 3 + ["low"] * 3


async def test_aborts_before_and_while_running(app: Mediator) -> None:
    """A queued job is removed and recorded aborted; a running one is cancelled by its worker."""
    queued = await app.enqueue(Low(tag="never"))
    assert await queued.abort() is True
    assert await queued.status() is JobStatus.ABORTED
    assert [record.id for record in await app.failed_jobs("low")] == [queued.id]
    STARTED.clear()
    async with running_worker(app, queues=["low"], name="aborting", heartbeat=0.2):
        running = await app.enqueue(Low(tag="long", duration=30))

        async def started() -> bool:
            return "low:long" in STARTED

        await wait_until(started, "the long job to start")
        assert await running.abort() is True
        with pytest.raises(JobAbortedError):
            await running.result(timeout=10)


async def test_a_retry_runs_and_a_failed_job_is_found_and_requeued_by_its_own_id(app: Mediator) -> None:
    """A failed try is retried on its queue's node; a job given an id of the caller's, failed for good,
    is listed, found by that id without its tag, and requeued."""
    async with running_worker(app, queues=["mid"], name="retrying"):
        flaky = await app.enqueue(Flaky(tag="again"))
        assert await flaky.result(timeout=10) == "again@retrying"
        doomed = await app.enqueue(Flaky(tag="once"), job_id="order-7", max_tries=1)
        assert doomed.id == "{mid}order-7"
        with pytest.raises(JobFailedError):
            await doomed.result(timeout=10)
    assert [record.id for record in await app.failed_jobs("mid")] == ["{mid}order-7"]
    assert await app.job("order-7").status() is JobStatus.FAILED
    requeued = await app.requeue("order-7")
    assert (requeued.id, requeued.enqueued) == ("{mid}order-7", True)
    assert await app.job("order-7").status() is JobStatus.QUEUED
    assert await app.failed_jobs("mid") == []


async def test_a_recurring_tick_is_enqueued_once_on_its_queues_node(app: Mediator) -> None:
    """Two workers enqueueing the same tick add one job; it runs, and its id finds it."""
    entry = app.recurring(Mid(tag="tick"), cron="0 * * * *", name="hourly")
    tick = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert await app.enqueue_tick(entry, tick) is True
    assert await app.enqueue_tick(entry, tick) is False
    async with running_worker(app, queues=["mid"], name="ticking"):
        handle = app.job(f"recurring:hourly:{int(tick.timestamp())}")
        assert await handle.result(timeout=10) == "tick@ticking"
