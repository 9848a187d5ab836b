"""Job history: what the engine records of each job (steps, progress, logs, parent, counters), its bounds,
and the switch that turns it off; read back through the dashboard's store, as the pages will."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from arq_mediator import Context, JobFailedError, JobHistory, Mediator, Request
from arq_mediator._history import MAX_STEPS, history_key, index_key, logs_key, steps_key
from arq_mediator.dashboard._model import JobState
from arq_mediator.dashboard._store import RedisDashboardSource

from .conftest import BaseProbe, running_worker
from .waiting import FAST, eventually, polled


class Work(Request[int]):
    n: int
    fail_first: bool = False
    fail_always: bool = False
    lines: int = 0


class Parent(Request[str]):
    pass


@dataclass
class Probe(BaseProbe):
    """Per-test state: the ids of child jobs the Parent handler enqueued."""

    children: list[str] = field(default_factory=list)


async def work(request: Work, ctx: Context) -> int:
    assert ctx.job is not None
    for line in range(request.lines):
        ctx.logger.info("line %d of try %d", line, ctx.job.try_number)
    ctx.logger.debug("debug lines are not kept")
    ctx.progress(0.25)
    ctx.progress(1)
    if request.fail_always or (request.fail_first and ctx.job.try_number == 1):
        raise RuntimeError(f"try {ctx.job.try_number} failed")
    return request.n


async def parent(request: Parent, ctx: Context) -> str:
    child = await ctx.mediator.enqueue(Work(n=7))
    ctx.resource(Probe).children.append(child.id)
    await child.result(timeout=10)
    return child.id


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(max_tries=2)(work)
    mediator.handler(parent)


async def test_a_retried_job_records_each_step_with_its_try_and_worker(mediator: Mediator) -> None:
    """Enqueued, started try 1, retrying (when, after what), started try 2, succeeded: each with a time."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, name="w-1", **FAST):
        handle = await mediator.enqueue(Work(n=1, fail_first=True))
        assert await handle.result(timeout=10) == 1

    detail = await store.job(handle.id)
    assert detail is not None
    steps = [(step.state, step.try_number, step.worker) for step in detail.steps]
    assert steps == [
        ("enqueued", None, None),
        ("started", 1, "w-1"),
        ("retrying", 1, None),
        ("started", 2, "w-1"),
        ("succeeded", 2, "w-1"),
    ]
    retry = detail.steps[2]
    assert retry.detail is not None
    assert "builtins.RuntimeError" in retry.detail
    assert [step.at for step in detail.steps] == sorted(step.at for step in detail.steps)
    assert detail.summary.state is JobState.SUCCEEDED
    assert detail.summary.tries == 2
    assert detail.summary.worker == "w-1"
    assert detail.result == 1
    assert detail.payload == {"n": 1, "fail_first": True, "fail_always": False, "lines": 0}
    assert detail.wait is not None
    assert detail.run is not None


async def test_progress_and_the_last_log_lines_of_each_try_are_kept(redis_url: str, probe: Probe) -> None:
    """``ctx.progress`` and ``ctx.logger`` lines (INFO and above) reach the history, the last N of them."""
    mediator = Mediator(redis=redis_url, history=JobHistory(max_log_lines=3))
    register(mediator)
    mediator.provide(probe)
    async with mediator, running_worker(mediator, **FAST):
        handle = await mediator.enqueue(Work(n=2, fail_first=True, lines=2))
        await handle.result(timeout=10)
        store = RedisDashboardSource(mediator)
        detail = await polled(
            lambda: store.job(handle.id),
            lambda found: found is not None and len(found.logs) == 3,
            what="the last log lines written",
        )
    assert detail is not None
    assert [(line.try_number, line.message) for line in detail.logs] == [
        (1, "line 1 of try 1"),
        (2, "line 0 of try 2"),
        (2, "line 1 of try 2"),
    ]
    assert {line.level for line in detail.logs} == {"INFO"}
    assert detail.progress == 1.0


def test_progress_outside_a_job_is_checked_and_ignored(mediator: Mediator) -> None:
    """Inline there is no job to report on: a valid fraction is ignored, a bad one still raises."""
    mediator.context.progress(0.5)
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="progress must be a fraction"):
            mediator.context.progress(bad)


async def test_a_job_enqueued_by_a_handler_names_its_parent(mediator: Mediator, probe: Probe) -> None:
    """The child of a job's handler records the job as its parent; a job enqueued by a caller has none."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, **FAST):
        handle = await mediator.enqueue(Parent())
        child_id = await handle.result(timeout=10)
    child = await store.job(child_id)
    top = await store.job(handle.id)
    assert child is not None
    assert top is not None
    assert child.parent_id == handle.id
    assert top.parent_id is None


async def test_a_failed_job_is_listed_with_its_error_and_counted(mediator: Mediator) -> None:
    """A job that fails for good is indexed as failed (per queue and type) and counted per second."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, **FAST):
        failing = await mediator.enqueue(Work(n=3, fail_always=True))
        with pytest.raises(JobFailedError):
            await failing.result(timeout=10)
        await (await mediator.enqueue(Work(n=4))).result(timeout=10)
    page = await store.jobs(JobState.FAILED, queue="default", request_type=Work.message_name)
    assert [row.id for row in page.items] == [failing.id]
    detail = await store.job(failing.id)
    assert detail is not None
    assert detail.error_type == "builtins.RuntimeError"
    assert detail.error_message == "try 2 failed"
    assert detail.traceback is not None
    assert "RuntimeError" in detail.traceback
    points = await store.throughput("minute", 2)
    assert sum(point.succeeded for point in points) == 1
    assert sum(point.failed for point in points) == 1


async def test_old_jobs_past_the_cap_go_with_everything_kept_of_them(
    redis_url: str, redis: Redis, probe: Probe
) -> None:
    """With max_jobs=2, a trim drops the oldest: index entries, hash, steps, payload and log lines.

    Finishing jobs trim now and then (the first in each second, and one in 16), the counts always.
    """
    mediator = Mediator(redis=redis_url, history=JobHistory(max_jobs=2))
    register(mediator)
    mediator.provide(probe)
    async with mediator, running_worker(mediator, **FAST):
        ids = []
        for n in range(4):  # one at a time, so the finish order is known
            handle = await mediator.enqueue(Work(n=n, lines=1))
            await handle.result(timeout=10)
            ids.append(handle.id)
        await eventually(lambda: _exists(redis, logs_key(ids[-1])), what="the last job's log lines")
        assert (await RedisDashboardSource(mediator).counts()).succeeded == 2
    assert [member.decode() for member in await redis.zrange(index_key("succeeded"), 0, -1)] == ids[2:]
    assert await redis.zcard(index_key("succeeded", "default")) == 2
    assert await redis.zcard(index_key("succeeded", "default", Work.message_name)) == 2
    for old in ids[:2]:
        assert not await redis.exists(history_key(old), logs_key(old), steps_key(old))


async def test_jobs_older_than_the_retention_are_trimmed(redis_url: str, redis: Redis, probe: Probe) -> None:
    """A job finished longer ago than keep_jobs is unlisted by a later finish, with all kept of it."""
    mediator = Mediator(redis=redis_url, history=JobHistory(keep_jobs=timedelta(milliseconds=200)))
    register(mediator)
    mediator.provide(probe)
    store = RedisDashboardSource(mediator)
    async with mediator, running_worker(mediator, **FAST):
        first = await mediator.enqueue(Work(n=1))
        await first.result(timeout=10)

        async def first_is_gone() -> bool:  # a finish trims when it is its second's first
            await (await mediator.enqueue(Work(n=2))).result(timeout=10)
            page = await store.jobs(JobState.SUCCEEDED)
            return first.id not in [row.id for row in page.items]

        await eventually(first_is_gone, interval=0.3, what="the first job trimmed")
        assert await store.job(first.id) is not None  # its result record is kept longer than its history
    assert not await redis.exists(history_key(first.id), steps_key(first.id))


async def test_history_off_records_nothing_yet_jobs_run_and_show(
    redis_url: str, redis: Redis, probe: Probe
) -> None:
    """With history=None no history key is written; jobs run, and the store still reads their results."""
    mediator = Mediator(redis=redis_url, history=None)
    register(mediator)
    mediator.provide(probe)
    store = RedisDashboardSource(mediator)
    async with mediator, running_worker(mediator, **FAST):
        handle = await mediator.enqueue(Work(n=5, lines=2))
        assert await handle.result(timeout=10) == 5
        detail = await store.job(handle.id)
        assert (await store.jobs(JobState.SUCCEEDED)).total == 0
    assert await redis.keys("arqm:history:*") == []
    assert detail is not None
    assert detail.summary.state is JobState.SUCCEEDED
    assert detail.summary.request_type == Work.message_name
    assert detail.steps == []
    assert detail.logs == []


async def test_a_job_id_used_again_starts_a_new_history(mediator: Mediator, redis: Redis) -> None:
    """Once a result expired and its id is enqueued again, the old run is unlisted and its steps dropped."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, **FAST):
        first = await mediator.enqueue(Work(n=1), job_id="again")
        await first.result(timeout=10)
        await redis.delete("arq:result:again")  # as if the result expired
        second = await mediator.defer(Work(n=2), by=60, job_id="again")
        assert second.enqueued
    detail = await store.job("again")
    assert detail is not None
    assert [step.state for step in detail.steps] == ["scheduled"]
    assert (await store.jobs(JobState.SUCCEEDED)).total == 0
    assert detail.summary.state is JobState.SCHEDULED


async def test_each_step_is_published_as_a_dashboard_event(mediator: Mediator) -> None:
    """The store's events follow a job: enqueued, running, succeeded, with its id and queue."""
    store = RedisDashboardSource(mediator)
    events = store.events()
    seen: list[tuple[str | None, JobState | None, str | None]] = []

    async def listen() -> None:
        async for event in events:
            seen.append((event.job_id, event.state, event.queue))

    listener = asyncio.create_task(listen())
    try:

        async def subscribed() -> bool:  # an enqueue before the subscription is in place goes unheard
            if not seen:
                await mediator.enqueue(Work(n=0))
            return bool(seen)

        await eventually(subscribed, interval=0.05, what="the events subscription")
        async with running_worker(mediator, **FAST):
            handle = await mediator.enqueue(Work(n=1))
            await handle.result(timeout=10)
            await eventually(
                lambda: (handle.id, JobState.SUCCEEDED, "default") in seen, what="succeeded event"
            )
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    mine = [state for job_id, state, _ in seen if job_id == handle.id]
    assert mine == [JobState.ENQUEUED, JobState.RUNNING, JobState.SUCCEEDED]


async def _exists(redis: Redis, key: str) -> bool:
    return bool(await redis.exists(key))


async def test_history_keys_of_another_type_cost_a_job_its_history_not_its_outcome(
    mediator: Mediator, redis: Redis
) -> None:
    """A history key some other client gave another type is skipped; the job still runs and finishes."""
    handle = await mediator.defer(Work(n=8), by=0.05, job_id="hostile")
    await redis.delete(history_key("hostile"), steps_key("hostile"))
    await redis.set(history_key("hostile"), "not a hash")
    await redis.hset(steps_key("hostile"), "not", "a string")  # type: ignore[misc]
    await redis.set(index_key("succeeded"), "not a sorted set")
    async with running_worker(mediator, **FAST):
        assert await handle.result(timeout=10) == 8


async def test_a_long_history_keeps_its_first_step_and_its_latest(mediator: Mediator, redis: Redis) -> None:
    """Past its bound, a job's steps drop the oldest lines but the first (enqueued)."""
    store = RedisDashboardSource(mediator)
    handle = await mediator.enqueue(Work(n=9))
    await redis.rpush(steps_key(handle.id), *["1\tfiller\t\t\t"] * 1000)  # type: ignore[misc]
    async with running_worker(mediator, **FAST):
        await handle.result(timeout=10)
    assert await redis.llen(steps_key(handle.id)) <= MAX_STEPS  # type: ignore[misc]
    detail = await store.job(handle.id)
    assert detail is not None
    states = [step.state for step in detail.steps]
    assert states[0] == "enqueued"
    assert states[-2:] == ["started", "succeeded"]


async def test_with_history_off_every_script_still_runs(redis_url: str, probe: Probe) -> None:
    """History off, a failed job is requeued, aborted and retried through every script without error."""
    mediator = Mediator(redis=redis_url, history=None)
    register(mediator)
    mediator.provide(probe)
    async with mediator, running_worker(mediator, **FAST):
        failing = await mediator.enqueue(Work(n=1, fail_always=True))
        with pytest.raises(JobFailedError):
            await failing.result(timeout=10)
        requeued = await mediator.requeue(failing.id)
        assert requeued.enqueued
        with pytest.raises(JobFailedError):
            await requeued.result(timeout=10)
        later = await mediator.defer(Work(n=2), by=600)
        assert await later.abort()


async def test_a_running_job_shows_its_start(mediator: Mediator, probe: Probe) -> None:
    """While a job runs, its page shows the try's start and worker (written to its steps when it ends)."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, name="w-2", **FAST):
        handle = await mediator.enqueue(Parent())
        detail = await polled(
            lambda: store.job(handle.id),
            lambda found: found is not None and found.summary.state is JobState.RUNNING,
            what="the parent running",
        )
        await handle.result(timeout=10)
    assert detail is not None
    assert [(step.state, step.try_number, step.worker) for step in detail.steps][-1] == ("started", 1, "w-2")
