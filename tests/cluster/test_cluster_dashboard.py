"""The dashboard's store on a cluster: counts, lists, graphs and a job's page read every queue's node."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import pytest

from arq_mediator import JobFailedError, Mediator
from arq_mediator.dashboard import DashboardEvent, JobState, RedisDashboardSource, dashboard_app
from tests.dashboard.serving import serving
from tests.jobs.conftest import running_worker
from tests.jobs.worker_processes import wait_until

from .app import QUEUES, Flaky, High, Low, Mid, build
from .deployment import ClusterDeployment


async def test_the_store_reads_every_queues_node(app: Mediator) -> None:
    """Finished jobs of three masters are counted, listed newest first, graphed; a job's page opens by
    its tagged id and by the caller's; a failed job is requeued and a waiting one deleted."""
    store = RedisDashboardSource(app)
    events: list[DashboardEvent] = []

    async def listen() -> None:
        async for event in store.events():
            events.append(event)

    listener = asyncio.create_task(listen())
    try:
        await asyncio.sleep(0.3)  # the subscriptions are made on the first iteration
        async with running_worker(app, queues=list(QUEUES), name="shown"):
            handles = await app.enqueue_many([High(tag="h"), Mid(tag="m"), Low(tag="l")])
            for handle in handles:
                await handle.result(timeout=10)
            failed = await app.enqueue(Flaky(tag="f"), job_id="bad-1", max_tries=1)
            with pytest.raises(JobFailedError):
                await failed.result(timeout=10)
        counts = await store.counts()
        assert (counts.succeeded, counts.failed) == (3, 1)
        page = await store.jobs(JobState.SUCCEEDED)
        assert page.total == 3
        assert {row.id for row in page.items} == {handle.id for handle in handles}
        assert [row.id for row in (await store.jobs(JobState.SUCCEEDED, queue="low")).items] == [
            handles[2].id
        ]
        points = await store.throughput("minute", 2)
        assert sum(point.succeeded for point in points) == 3
        assert sum(point.failed for point in points) == 1
        detail = await store.job("bad-1")
        assert detail is not None
        assert (detail.summary.id, detail.summary.state) == ("{mid}bad-1", JobState.FAILED)
        assert await store.requeue("bad-1")
        assert (await store.jobs(JobState.ENQUEUED)).total == 1
        assert await store.delete("{mid}bad-1")
        assert (await store.jobs(JobState.ENQUEUED)).total == 0

        async def heard() -> bool:
            return {event.queue for event in events if event.state is JobState.SUCCEEDED} == set(QUEUES)

        await wait_until(heard, "succeeded events of every queue")
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_recurring_jobs_show_their_last_tick(app: Mediator) -> None:
    """The last tick's job of a recurring job is found in its queue's slot."""
    entry = app.recurring(Mid(tag="tick"), cron="0 * * * *", name="hourly")
    tick = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert await app.enqueue_tick(entry, tick)
    [summary] = await RedisDashboardSource(app).recurring()
    assert summary.last_job_id == f"{{mid}}recurring:hourly:{int(tick.timestamp())}"
    assert summary.last_outcome is JobState.ENQUEUED


async def test_the_dashboards_pages_serve_a_cluster(cluster: ClusterDeployment) -> None:
    """Over HTTP: the overview, the lists and a job's page by its tagged id (braces quoted in the URL)."""
    await cluster.flush()
    mediator = build(cluster.url())
    async with (
        serving(dashboard_app(mediator)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        handle = await mediator.enqueue(Low(tag="shown"))
        assert (await client.get("/")).status_code == 200
        listed = await client.get("/jobs/enqueued")
        assert listed.status_code == 200
        assert quote(handle.id, safe="") in listed.text
        page = await client.get(f"/job/{quote(handle.id, safe='')}")
        assert page.status_code == 200
        assert "shown" in page.text
        assert (await client.get("/job/no-such-job")).status_code == 404
