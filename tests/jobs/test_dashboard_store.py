"""The dashboard's store against real jobs run by a real worker: counts, lists, job pages, actions, events."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from arq_mediator import Backoff, Context, JobFailedError, JobHandle, Mediator, Request
from arq_mediator._keys import QUEUE_PREFIX
from arq_mediator.dashboard._model import DashboardEvent, JobState, Resolution
from arq_mediator.dashboard._store import RedisDashboardSource
from tests.conftest import StartRedisServer

from .conftest import BaseProbe, running_worker
from .waiting import FAST, eventually, polled


class Quick(Request[int]):
    n: int


class Other(Request[str]):
    tag: str


class Blocked(Request[str]):
    tag: str


class Flaky(Request[int]):
    n: int


@dataclass
class Probe(BaseProbe):
    """Per-test state: whether Flaky jobs fail, and how many ran."""

    failing: bool = True
    flaky_runs: list[int] = field(default_factory=list)


async def quick(request: Quick, ctx: Context) -> int:
    return request.n


async def other(request: Other, ctx: Context) -> str:
    return request.tag


async def blocked(request: Blocked, ctx: Context) -> str:
    probe = ctx.resource(Probe)
    probe.started.set()
    await probe.release.wait()
    return request.tag


async def flaky(request: Flaky, ctx: Context) -> int:
    probe = ctx.resource(Probe)
    probe.flaky_runs.append(request.n)
    if probe.failing:
        raise RuntimeError("flaky failed")
    return request.n


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with, and one yearly recurring job."""
    mediator.handler(quick)
    mediator.handler(queue="other")(other)
    mediator.handler(blocked)
    mediator.handler(max_tries=2, backoff=Backoff(initial=600, jitter=0))(flaky)
    mediator.recurring(Quick(n=99), cron="0 0 1 1 *", name="yearly")


async def test_counts_and_lists_cover_every_state(mediator: Mediator, probe: Probe) -> None:
    """One job in each state is counted there and listed there, and nowhere else."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, max_jobs=1, **FAST):
        succeeded = await mediator.enqueue(Quick(n=1))
        await succeeded.result(timeout=10)
        probe.failing = True
        failing = await mediator.enqueue(Flaky(n=1), max_tries=1)
        with pytest.raises(JobFailedError):
            await failing.result(timeout=10)
        retrying = await mediator.enqueue(Flaky(n=2))
        await eventually(lambda: len(probe.flaky_runs) == 2, what="the flaky job's first try")
        scheduled = await mediator.defer(Quick(n=2), by=600)
        aborted = await mediator.defer(Quick(n=3), by=600)
        assert await aborted.abort()
        running = await mediator.enqueue(Blocked(tag="r"))
        async with asyncio.timeout(10):
            await probe.started.wait()
        waiting = [await mediator.enqueue(Quick(n=n)) for n in (4, 5)]
        counts = await polled(
            store.counts, lambda counts: counts.retrying == 1 and counts.running == 1, what="counts"
        )
        expected = {
            JobState.ENQUEUED: sorted(handle.id for handle in waiting),
            JobState.SCHEDULED: [scheduled.id],
            JobState.RUNNING: [running.id],
            JobState.RETRYING: [retrying.id],
            JobState.SUCCEEDED: [succeeded.id],
            JobState.FAILED: [failing.id],
            JobState.ABORTED: [aborted.id],
        }
        # Sorted: the two waiting jobs may share a millisecond, and so a score.
        listed = {state: sorted(row.id for row in (await store.jobs(state)).items) for state in JobState}
        totals = {state: (await store.jobs(state)).total for state in JobState}
        probe.release.set()
    assert listed == expected
    assert totals == {state: len(ids) for state, ids in expected.items()}
    assert (counts.enqueued, counts.scheduled, counts.running, counts.retrying) == (2, 1, 1, 1)
    assert (counts.succeeded, counts.failed, counts.aborted) == (1, 1, 1)


async def test_finished_jobs_page_newest_first_and_filter_by_queue_and_type(mediator: Mediator) -> None:
    """Pages are slices of the newest-first order; queue, type and both narrow the list and its total."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, queues=["default", "other"], **FAST):
        ids = []
        for n in range(5):  # one at a time, so the finish order is known
            handle = await mediator.enqueue(Quick(n=n), queue="other" if n % 2 else None)
            await handle.result(timeout=10)
            ids.append(handle.id)
        tagged = await mediator.enqueue(Other(tag="x"))
        await tagged.result(timeout=10)
    newest = [tagged.id, *reversed(ids)]
    first = await store.jobs(JobState.SUCCEEDED, limit=2)
    second = await store.jobs(JobState.SUCCEEDED, offset=2, limit=2)
    assert ([row.id for row in first.items], first.total) == (newest[:2], 6)
    assert [row.id for row in second.items] == newest[2:4]
    assert (await store.jobs(JobState.SUCCEEDED, offset=10)).items == []
    on_other = await store.jobs(JobState.SUCCEEDED, queue="other")
    assert [row.id for row in on_other.items] == [tagged.id, ids[3], ids[1]]
    of_quick = await store.jobs(JobState.SUCCEEDED, request_type=Quick.message_name)
    assert [row.id for row in of_quick.items] == list(reversed(ids))
    both = await store.jobs(JobState.SUCCEEDED, queue="other", request_type=Quick.message_name)
    assert ([row.id for row in both.items], both.total) == ([ids[3], ids[1]], 2)
    row = first.items[1]
    assert (row.request_type, row.queue, row.state, row.tries) == (
        Quick.message_name,
        "default",
        JobState.SUCCEEDED,
        1,
    )
    assert row.enqueued_at is not None
    assert row.started_at is not None
    assert row.finished_at is not None
    assert row.enqueued_at <= row.started_at <= row.finished_at
    assert await store.request_types() == sorted(
        [Quick.message_name, Other.message_name, Blocked.message_name, Flaky.message_name]
    )


async def _next_millisecond(mediator: Mediator, job: JobHandle[Any]) -> None:
    """Wait until Redis's clock has passed *job*'s due time, so the next job sorts as newer, not as a tie."""
    redis = mediator._jobs.redis
    assert job.queue is not None
    due = await redis.zscore(QUEUE_PREFIX + job.queue, job.id)
    assert due is not None

    async def later() -> bool:
        seconds, microseconds = await redis.time()
        return bool(int(seconds) * 1000 + int(microseconds) // 1000 > due)

    await eventually(later, what="Redis's clock to pass the job's due time")


async def test_waiting_jobs_filter_by_type_and_queue(mediator: Mediator) -> None:
    """Enqueued jobs (no worker) list per queue and per type, newest first."""
    store = RedisDashboardSource(mediator)
    first = await mediator.enqueue(Quick(n=1))
    await _next_millisecond(mediator, first)
    tagged = await mediator.enqueue(Other(tag="t"))
    await _next_millisecond(mediator, tagged)
    second = await mediator.enqueue(Quick(n=2))
    everything = await store.jobs(JobState.ENQUEUED)
    assert [row.id for row in everything.items] == [second.id, tagged.id, first.id]
    of_quick = await store.jobs(JobState.ENQUEUED, request_type=Quick.message_name)
    assert ([row.id for row in of_quick.items], of_quick.total) == ([second.id, first.id], 2)
    on_other = await store.jobs(JobState.ENQUEUED, queue="other")
    assert [row.id for row in on_other.items] == [tagged.id]
    assert (await store.jobs(JobState.ENQUEUED, offset=1, limit=1)).items[0].id == tagged.id


async def test_bad_ids_and_bad_values(mediator: Mediator) -> None:
    """An id no job has (or no id at all) is None or False, never an exception; bad values are ValueErrors."""
    store = RedisDashboardSource(mediator)
    for bad in ("", "no-such-job", "x" * 5000, None, 7):
        assert await store.job(bad) is None  # type: ignore[arg-type]
        assert await store.requeue(bad) is False  # type: ignore[arg-type]
        assert await store.delete(bad) is False  # type: ignore[arg-type]
        assert await store.abort(bad) is False  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit from 1"):
        await store.jobs(JobState.SUCCEEDED, limit=0)
    with pytest.raises(ValueError, match="offset must be 0 or more"):
        await store.jobs(JobState.SUCCEEDED, offset=-1)
    with pytest.raises(ValueError, match="not a valid JobState"):
        await store.jobs("lost")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolution must be one of"):
        await store.throughput("week", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="points must be from 1"):
        await store.throughput("hour", 0)
    with pytest.raises(ValueError, match="action must be one of"):
        await store.bulk("explode", JobState.FAILED)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no recurring job named 'nope'"):
        await store.trigger("nope")
    with pytest.raises(ValueError, match="scan_limit"):
        RedisDashboardSource(mediator, scan_limit=0)


async def test_queues_workers_and_throughput(mediator: Mediator) -> None:
    """Queues list their counts and serving workers; workers their counters; graphs count finished jobs."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, name="w-1", queues=["other", "default"], max_jobs=3, **FAST):
        await (await mediator.enqueue(Quick(n=1))).result(timeout=10)
        await mediator.defer(Quick(n=2), by=600)
        workers = await polled(
            store.workers, lambda found: bool(found) and found[0].processed == 1, what="heartbeat"
        )
        queues = {queue.name: queue for queue in await store.queues()}
    [worker] = workers
    assert (worker.name, worker.queues, worker.max_jobs, worker.failed) == ("w-1", ["other", "default"], 3, 0)
    assert worker.heartbeat_age.total_seconds() < 60
    assert queues["default"].workers == ["w-1"]
    assert queues["other"].workers == ["w-1"]
    assert queues["default"].scheduled == 1
    resolutions: list[Resolution] = ["second", "minute", "hour", "day"]
    for resolution in resolutions:
        points = await store.throughput(resolution, 3)
        assert len(points) == 3
        assert points[-1].start <= datetime.now(UTC)
        assert [point.start for point in points] == sorted(point.start for point in points)
        assert sum(point.succeeded for point in points) in (0, 1)  # a second boundary may fall between
    assert sum(point.succeeded for point in await store.throughput("hour", 2)) == 1


async def test_recurring_jobs_show_their_last_tick_and_trigger(mediator: Mediator) -> None:
    """A recurring job lists its cron, next run and last tick's outcome; trigger enqueues it now."""
    store = RedisDashboardSource(mediator)
    [before] = await store.recurring()
    assert (before.name, before.cron, before.queue, before.last_run) == (
        "yearly",
        "0 0 1 1 *",
        "default",
        None,
    )
    assert before.next_run is not None
    assert before.next_run > datetime.now(UTC)
    tick = datetime(2026, 1, 1, tzinfo=UTC)
    assert await mediator.enqueue_tick(mediator.recurring_jobs["yearly"], tick)
    [queued] = await store.recurring()
    assert queued.last_outcome is JobState.ENQUEUED  # before its claim writes any history
    async with running_worker(mediator, **FAST):
        [after] = await polled(
            store.recurring, lambda found: found[0].last_outcome is JobState.SUCCEEDED, what="the tick run"
        )
        triggered = await store.trigger("yearly")
        assert await mediator.job(triggered).result(timeout=10) == 99
    assert after.last_run == tick
    assert after.last_job_id == f"recurring:yearly:{int(tick.timestamp())}"


async def test_requeue_runs_a_failed_or_succeeded_job_again(mediator: Mediator, probe: Probe) -> None:
    """Requeue puts a failed job back with all its tries, and a succeeded one from its kept payload."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, **FAST):
        failed = await mediator.enqueue(Flaky(n=1), max_tries=1)
        with pytest.raises(JobFailedError):
            await failed.result(timeout=10)
        done = await mediator.enqueue(Quick(n=5))
        await done.result(timeout=10)
        probe.failing = False
        assert await store.requeue(failed.id)
        assert await failed.result(timeout=10) == 1
        assert await store.requeue(done.id)
        await polled(
            lambda: store.job(done.id),
            lambda found: (
                found is not None
                and found.summary.tries == 1
                and any(step.state == "requeued" for step in found.steps)
                and found.summary.state is JobState.SUCCEEDED
            ),
            what="the requeued run",
        )
        detail = await store.job(failed.id)
    assert detail is not None
    assert [step.state for step in detail.steps][-3:] == ["requeued", "started", "succeeded"]
    assert (await store.jobs(JobState.FAILED)).total == 0


async def test_a_scheduled_job_requeued_is_due_now(mediator: Mediator) -> None:
    """Requeue of a job waiting for later makes it due at once."""
    store = RedisDashboardSource(mediator)
    later = await mediator.defer(Quick(n=3), by=600)
    assert await store.requeue(later.id)
    async with running_worker(mediator, **FAST):
        assert await later.result(timeout=10) == 3


async def test_delete_and_abort(mediator: Mediator, probe: Probe, redis: Redis) -> None:
    """Delete removes a finished or waiting job and all kept of it; a running one is aborted, not deleted."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, **FAST):
        done = await mediator.enqueue(Quick(n=1))
        await done.result(timeout=10)
        running = await mediator.enqueue(Blocked(tag="b"))
        async with asyncio.timeout(10):
            await probe.started.wait()
        assert await store.delete(done.id)
        assert await store.job(done.id) is None
        assert (await store.jobs(JobState.SUCCEEDED)).total == 0
        assert not await store.delete(running.id)
        assert await store.abort(running.id)
        await polled(
            lambda: store.job(running.id),
            lambda found: found is not None and found.summary.state is JobState.ABORTED,
            what="aborted",
        )
        assert not await store.abort(running.id)  # finished already
    waiting = await mediator.defer(Quick(n=2), by=600)
    assert await store.delete(waiting.id)
    assert await store.job(waiting.id) is None
    assert await redis.zcard("arq:queue:default") == 0


async def test_bulk_actions_work_per_state_and_queue(mediator: Mediator, probe: Probe) -> None:
    """Bulk requeue of a queue's failed jobs requeues those only; bulk delete empties a state."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, queues=["default", "other"], **FAST):
        failed: list[JobHandle[int]] = []
        for queue in ("default", "default", "other"):
            handle = await mediator.enqueue(Flaky(n=len(failed)), max_tries=1, queue=queue)
            with pytest.raises(JobFailedError):
                await handle.result(timeout=10)
            failed.append(handle)
        probe.failing = False
        assert await store.bulk("requeue", JobState.FAILED, "default") == 2
        assert [await handle.result(timeout=10) for handle in failed[:2]] == [0, 1]
        assert [row.id for row in (await store.jobs(JobState.FAILED)).items] == [failed[2].id]
        assert await store.bulk("delete", JobState.SUCCEEDED) == 2
        assert (await store.jobs(JobState.SUCCEEDED)).total == 0
        waiting = [await mediator.defer(Quick(n=n), by=600) for n in range(3)]
        assert await store.bulk("abort", JobState.SCHEDULED) == 3
        assert (await store.jobs(JobState.ABORTED)).total == len(waiting)


async def test_events_survive_a_redis_restart(redis_servers: StartRedisServer) -> None:
    """The store's events stream resubscribes after its Redis went away and came back."""
    server = await redis_servers()
    mediator = Mediator(redis=server.url)
    register(mediator)
    received: list[DashboardEvent] = []
    async with mediator:
        store = RedisDashboardSource(mediator)
        channel = mediator._jobs.channels.events
        publisher: Redis = Redis.from_url(server.url)

        async def listen() -> None:
            async for event in store.events():
                received.append(event)

        async def heard(job_id: str) -> bool:
            try:
                await publisher.publish(channel, f"enqueued\tdefault\t{job_id}")
                await publisher.publish(channel, "garbage")
            except (OSError, ConnectionError):
                return False
            return any(event.job_id == job_id for event in received)

        listener = asyncio.create_task(listen())
        try:
            await eventually(lambda: heard("before"), interval=0.05, what="an event before the restart")
            server.stop()
            server.start()
            await server.ready()
            await eventually(
                lambda: heard("after"), timeout=20, interval=0.1, what="an event after the restart"
            )
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await publisher.aclose()
    assert {event.state for event in received} == {JobState.ENQUEUED}
    assert all(event.kind == "job" and event.queue == "default" for event in received)
