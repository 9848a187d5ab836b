"""Aborting jobs: queued ones are removed, running ones are cancelled on their worker, finished ones stay."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from arq.jobs import serialize_job
from redis.asyncio import Redis

from arq_mediator import Context, JobFailedError, JobHandle, JobNotFoundError, JobStatus, Mediator, Request
from arq_mediator._jobs import now_ms
from tests.keys import Channels, abort_key, job_key, queue_key

from .conftest import BaseProbe, running_worker
from .waiting import FAST, eventually

ABORTED = "arq_mediator.JobAbortedError"


class Blocked(Request[str]):
    tag: str


class Quick(Request[int]):
    n: int


@dataclass
class Probe(BaseProbe):
    """Per-test state: which Quick jobs ran, and how Blocked handlers started and ended."""

    ran: list[int] = field(default_factory=list)
    cancelled: int = 0


async def blocked(request: Blocked, ctx: Context) -> str:
    probe = ctx.resource(Probe)
    probe.started.set()
    try:
        await probe.release.wait()
    except asyncio.CancelledError:
        probe.cancelled += 1
        raise
    return request.tag


async def quick(request: Quick, ctx: Context) -> int:
    ctx.resource(Probe).ran.append(request.n)
    return request.n


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(blocked)
    mediator.handler(quick)


async def test_aborting_a_queued_job_removes_it(mediator: Mediator, redis: Redis, probe: Probe) -> None:
    """A queued job that is aborted is removed, recorded as ABORTED (listed as failed), and never runs."""
    handle = await mediator.enqueue(Quick(n=1))

    assert await handle.abort() is True
    assert await handle.status() is JobStatus.ABORTED
    assert [record.id for record in await mediator.failed_jobs("default")] == [handle.id]
    record = await handle.record()
    assert record is not None
    assert record.error is not None
    assert record.error.type.endswith("JobAbortedError")
    assert record.error.message == "aborted before it started"
    with pytest.raises(JobFailedError) as caught:
        await handle.result(timeout=1)
    assert caught.value.remote_type == ABORTED
    assert await redis.zscore(queue_key("default"), handle.id) is None
    assert not await redis.exists(job_key(handle.id))

    async with running_worker(mediator, **FAST):
        sentinel = await mediator.enqueue(Quick(n=2))
        assert await sentinel.result(timeout=3) == 2
    assert probe.ran == [2]


async def test_aborting_a_queued_job_wakes_its_waiters(
    mediator: Mediator, redis: Redis, channels: Channels
) -> None:
    """Someone already awaiting a queued job's result hears of its abort at once."""
    handle = await mediator.enqueue(Quick(n=1))
    waiter = asyncio.create_task(handle.result(timeout=3))

    async def subscribed() -> bool:
        [(_, subscribers)] = await redis.pubsub_numsub(channels.done(handle.id))
        return int(subscribers) == 1

    await eventually(subscribed)
    assert await handle.abort() is True
    with pytest.raises(JobFailedError, match="aborted before it started"):
        await waiter


async def test_aborting_an_unreadable_queued_job_removes_it(mediator: Mediator, redis: Redis) -> None:
    """A queued job whose body is no JSON envelope (a legacy pickled arq job) can still be aborted."""
    legacy = f"legacy-{uuid.uuid4().hex}"
    await redis.set(job_key(legacy), serialize_job("old_task", (), {}, 1, now_ms()))
    await redis.zadd(queue_key("default"), {legacy: now_ms()})
    handle: JobHandle[Any] = mediator.job(legacy)  # untyped: R cannot be inferred without a type
    assert await handle.status() is JobStatus.QUEUED

    assert await handle.abort() is True
    assert await handle.status() is JobStatus.ABORTED
    assert await redis.zscore(queue_key("default"), legacy) is None


async def test_aborting_a_deferred_job_removes_it(mediator: Mediator, redis: Redis) -> None:
    """A deferred job can be aborted before its time comes; it is removed from its queue."""
    handle = await mediator.defer(Quick(n=1), by=60)
    assert await handle.status() is JobStatus.DEFERRED

    assert await handle.abort() is True
    assert await handle.status() is JobStatus.ABORTED
    assert await redis.zcard(queue_key("default")) == 0


async def test_aborting_a_running_job_cancels_it_on_its_worker(mediator: Mediator, probe: Probe) -> None:
    """A running job that is aborted is cancelled on its worker within 2 s and the worker carries on."""
    async with running_worker(mediator, name="canceller", **FAST) as worker:
        handle = await mediator.enqueue(Blocked(tag="held"))
        await asyncio.wait_for(probe.started.wait(), 3)
        assert await handle.status() is JobStatus.IN_PROGRESS

        asked = time.monotonic()
        assert await handle.abort() is True
        with pytest.raises(JobFailedError) as caught:
            await handle.result(timeout=2)
        assert time.monotonic() - asked < 2.0
        assert caught.value.remote_type == ABORTED
        assert caught.value.remote_message == "aborted while running"
        assert probe.cancelled == 1
        record = await handle.record()
        assert record is not None
        assert record.worker == "canceller"

        after = await mediator.enqueue(Quick(n=5))
        assert await after.result(timeout=3) == 5
        await eventually(lambda: worker.running == 0)  # results are published before the task ends
    assert (worker.counters.failed, worker.counters.succeeded) == (1, 1)


async def test_an_abort_flag_alone_is_picked_up_by_the_heartbeat(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """If the abort message is missed, the running job's worker still finds the flag at its next heartbeat."""
    async with running_worker(mediator, **FAST):
        handle = await mediator.enqueue(Blocked(tag="held"))
        await asyncio.wait_for(probe.started.wait(), 3)
        await redis.set(abort_key(handle.id), "1", px=10_000)  # the flag, without the published message

        with pytest.raises(JobFailedError) as caught:
            await handle.result(timeout=2)
    assert caught.value.remote_type == ABORTED
    assert probe.cancelled == 1
    assert not await redis.exists(abort_key(handle.id))


async def test_aborting_a_finished_job_returns_false(mediator: Mediator) -> None:
    """A job that already finished cannot be aborted: abort() returns False and its result stands."""
    handle = await mediator.enqueue(Quick(n=3))
    async with running_worker(mediator, **FAST):
        assert await handle.result(timeout=3) == 3

    assert await handle.abort() is False
    assert await handle.status() is JobStatus.SUCCEEDED
    assert await handle.result(timeout=1) == 3


async def test_aborting_an_unknown_job_raises_job_not_found(mediator: Mediator) -> None:
    """Aborting an id that is neither queued, running nor finished raises JobNotFoundError."""
    with pytest.raises(JobNotFoundError, match="no-such-job"):
        await mediator.job("no-such-job").abort()


async def test_abort_reads_again_when_the_job_changed_meanwhile(
    mediator: Mediator, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the job's body changes between abort's read and its script (a retry, say), abort reads again."""
    handle = await mediator.enqueue(Quick(n=1))
    current: bytes | None = await redis.get(job_key(handle.id))
    assert current is not None
    stale = current.replace(b'"payload":{"n":1}', b'"payload":{"n":0}')
    reads = 0
    get = mediator._jobs.redis.get

    async def stale_once(name: str) -> bytes | None:
        nonlocal reads
        reads += 1
        if reads == 1:
            return stale
        body: bytes | None = await get(name)
        return body

    monkeypatch.setattr(mediator._jobs.redis, "get", stale_once)

    assert await handle.abort() is True
    assert reads == 2
    assert await handle.status() is JobStatus.ABORTED
