"""Pushes to idle workers: an enqueue claims a new job for a registered idle worker and hands it over.

What must hold: the pushed job starts without a claim of the worker's; an idle worker is pushed at most
its free slots; a push message that never arrives is handed back by the worker's next claim; a stopping
worker gives back what was pushed to it and not started; a worker is pushed nothing while one of its
queues has a due job; and workers that do not register keep working.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from arq_mediator import Context, JobStatus, Mediator, Request, Worker, WorkerSettings
from arq_mediator._claims import ClaimReply
from arq_mediator._layout import run_script
from tests.keys import (
    deliveries_key,
    lease_key,
    push_inbox_key,
    push_ready_key,
    queue_key,
    running_key,
)

from .conftest import BaseProbe, working
from .waiting import FAST, eventually

# No idle claims during a test unless it asks for them: what starts a job is then the push alone.
QUIET: dict[str, Any] = FAST | {"idle_check": 30.0}


class Held(Request[str]):
    tag: str


class Quick(Request[str]):
    tag: str


class Urgent(Request[str]):
    """A job of the queue ``high``, for the tests of strict priority."""

    tag: str


@dataclass
class Probe(BaseProbe):
    """Per-test state: how many Held handlers run now, and the most that ever ran at once."""

    live: int = 0
    peak: int = 0


async def held(request: Held, ctx: Context) -> str:
    probe = ctx.resource(Probe)
    probe.live += 1
    probe.peak = max(probe.peak, probe.live)
    probe.started.set()
    try:
        await probe.release.wait()
    finally:
        probe.live -= 1
    return request.tag


async def quick(request: Quick, ctx: Context) -> str:
    assert ctx.job is not None
    return f"{request.tag}@{ctx.job.worker}"


async def urgent(request: Urgent, ctx: Context) -> str:
    return request.tag


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(held)
    mediator.handler(quick)
    mediator.handler(queue="high")(urgent)


async def claim_as(
    mediator: Mediator, instance: str, want: int, queues: list[str], lease: int = 30000, max_bytes: int = 0
) -> list[Any]:
    """Claim as worker *instance* in one script; it registers for pushes when it comes up short ('' never)."""
    size = max_bytes or mediator.max_job_bytes
    register_ms = 30000 if instance else 0
    arguments = [want, lease, f"{instance}.1", size, "probe", 0, instance, register_ms, len(queues)]
    return list(await run_script(mediator._jobs.scripts.claim, [], [*arguments, *queues]))


async def pushed_to(redis: Redis, instance: str, job_id: str) -> bool:
    return bool(await cast("Awaitable[bool]", redis.hexists(push_inbox_key(instance), job_id)))


async def server_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


class CountingWorker(Worker):
    """A worker that counts its claims."""

    claims = 0

    async def _claim(self, free: int, ahead: int) -> ClaimReply:
        self.claims += 1
        return await super()._claim(free, ahead)


class DeafWorker(CountingWorker):
    """A worker whose push messages are lost on their way (as with a dropped pub/sub connection)."""

    lost = 0

    def _pushed(self, data: bytes) -> None:
        self.lost += 1


async def registered(redis: Redis, queue: str, count: int = 1) -> None:
    """Wait until *count* workers are registered for pushes of *queue*."""

    async def ready() -> bool:
        return int(await redis.zcard(push_ready_key(queue))) == count

    await eventually(ready, what=f"{count} worker(s) registered for pushes of {queue}")


async def test_an_idle_worker_starts_a_pushed_job_without_claiming(mediator: Mediator, probe: Probe) -> None:
    redis = mediator._jobs.redis
    worker = CountingWorker(mediator, WorkerSettings(queues=["default"], **QUIET))
    async with working(worker):
        await registered(redis, "default")
        claims = worker.claims
        handle = await mediator.enqueue(Held(tag="pushed"))
        async with asyncio.timeout(5):
            await probe.started.wait()
        assert worker.claims == claims  # it came in the push, not through a claim
        assert worker._pushes is not None
        assert worker._pushes.heard == 1
        probe.release.set()
        assert await handle.result(timeout=5) == "pushed"


async def test_an_idle_worker_is_pushed_no_more_than_its_free_slots(mediator: Mediator, probe: Probe) -> None:
    redis = mediator._jobs.redis
    slots = 3
    worker = CountingWorker(mediator, WorkerSettings(queues=["default"], max_jobs=slots, **QUIET))
    async with working(worker):
        await registered(redis, "default")
        handles = [await mediator.enqueue(Held(tag=str(n))) for n in range(3 * slots)]
        await eventually(lambda: probe.live == slots, what=f"{slots} jobs running")
        assert await redis.zcard(queue_key("default")) == 2 * slots  # the rest queued, not pushed
        assert worker._pushes is not None
        assert worker._pushes.heard == slots
        probe.release.set()
        assert [await handle.result(timeout=10) for handle in handles] == [str(n) for n in range(3 * slots)]
    assert probe.peak == slots


async def test_a_lost_push_message_is_handed_back_by_the_next_claim(mediator: Mediator) -> None:
    redis = mediator._jobs.redis
    # A lease far longer than the wait below: the job cannot come back through a lapsed lease instead.
    settings = WorkerSettings(queues=["default"], **(FAST | {"lease": 30.0, "heartbeat": 1.0}))
    worker = DeafWorker(mediator, settings)
    async with working(worker):
        await registered(redis, "default")
        handle = await mediator.enqueue(Quick(tag="lost"))
        assert await handle.result(timeout=5) == f"lost@{worker.name}"
        assert worker.lost == 1
        assert await redis.get(deliveries_key(handle.id)) is None  # finished on its first delivery


async def test_a_stopping_worker_gives_back_the_pushed_jobs_it_has_not_started(mediator: Mediator) -> None:
    redis = mediator._jobs.redis
    deaf = DeafWorker(mediator, WorkerSettings(queues=["default"], **QUIET))
    async with working(deaf):
        await registered(redis, "default")
        handle = await mediator.enqueue(Quick(tag="given back"))
        await eventually(lambda: deaf.lost == 1, what="the push to reach the worker and be lost")
        assert await cast("Awaitable[int]", redis.hlen(push_inbox_key(deaf.instance))) == 1
    assert await redis.zcard(push_ready_key("default")) == 0
    assert await redis.exists(lease_key(handle.id), push_inbox_key(deaf.instance)) == 0
    assert await redis.zscore(queue_key("default"), handle.id) is not None
    assert await handle.status() is JobStatus.QUEUED
    assert await redis.get(deliveries_key(handle.id)) == b"0"  # its push did not count as a delivery
    async with working(Worker(mediator, WorkerSettings(queues=["default"], name="next", **FAST))):
        assert await handle.result(timeout=5) == "given back@next"


async def test_a_worker_is_pushed_nothing_while_one_of_its_queues_has_a_due_job(mediator: Mediator) -> None:
    """The registration of a worker serving [high, low] ends when a deferred job of high comes due."""
    redis = mediator._jobs.redis
    # Registered first; a deferred job of high then pulls the registration's end to its due time.
    await claim_as(mediator, "first", 4, ["high", "low"])
    early = await mediator.enqueue(Quick(tag="early"), queue="low")
    assert await pushed_to(redis, "first", early.id)
    soon = await mediator.defer(Quick(tag="soon"), by=0.3, queue="high")
    due = int(await redis.zscore(queue_key("high"), soon.id) or 0)
    await pushes_end_at(mediator, "first", due)

    # Registered while a deferred job of high waits: the registration ends when it comes due.
    later = await mediator.defer(Quick(tag="later"), by=0.3, queue="high")
    later_due = int(await redis.zscore(queue_key("high"), later.id) or 0)
    await redis.delete(queue_key("low"))
    await claim_as(mediator, "second", 4, ["high", "low"])
    expires = await cast("Awaitable[bytes | None]", redis.hget("arqm:push:second", "expires"))
    assert int(expires or 0) <= later_due
    await eventually(lambda: _after(redis, later_due), what="the second deferred job to come due")
    last = await mediator.enqueue(Quick(tag="last"), queue="low")
    assert not await pushed_to(redis, "second", last.id)


async def _after(redis: Redis, moment: int) -> bool:
    return await server_ms(redis) > moment


async def pushes_end_at(mediator: Mediator, instance: str, moment: int) -> None:
    """Check that *instance* is pushed a job of ``low`` before *moment* (server ms) only, never after it."""
    redis = mediator._jobs.redis
    before = await mediator.enqueue(Quick(tag="before"), queue="low")
    assert await pushed_to(redis, instance, before.id) == (await server_ms(redis) < moment)
    await eventually(lambda: _after(redis, moment), what="the moment pushes end")
    late = await mediator.enqueue(Quick(tag="late"), queue="low")
    assert not await pushed_to(redis, instance, late.id)
    assert await redis.zscore(queue_key("low"), late.id) is not None


async def test_workers_that_take_no_pushes_are_woken_as_before(mediator: Mediator) -> None:
    redis = mediator._jobs.redis
    settings = WorkerSettings(queues=["default"], name="old", push_when_idle=False, **QUIET)
    old = CountingWorker(mediator, settings)
    async with working(old):
        await eventually(lambda: old.claims >= 1, what="the worker's first claim")
        assert await redis.zcard(push_ready_key("default")) == 0
        handle = await mediator.enqueue(Quick(tag="woken"))
        assert await handle.result(timeout=5) == "woken@old"
        assert old._pushes is not None
        assert old._pushes.heard == 0


async def _set_field(redis: Redis, field: str, value: str) -> None:
    await cast("Awaitable[int]", redis.hset("arqm:push:x", field, value))


async def _drop_field(redis: Redis, field: str) -> None:
    await cast("Awaitable[int]", redis.hdel("arqm:push:x", field))


async def _set_key(redis: Redis, key: str) -> None:
    await redis.set(key, "junk")


# Each makes the registration of worker "x" (or a key a push to it writes) one a push could fail on part way.
HOSTILE: dict[str, Callable[[Redis], Awaitable[Any]]] = {
    "budget 1e3": lambda redis: _set_field(redis, "budget", "1e3"),
    "budget 1.5": lambda redis: _set_field(redis, "budget", "1.5"),
    "lease not a count": lambda redis: _set_field(redis, "lease", "2.5"),
    "no name": lambda redis: _drop_field(redis, "name"),
    "inbox a string": lambda redis: _set_key(redis, push_inbox_key("x")),
    "running set a string": lambda redis: _set_key(redis, running_key("default")),
}


@pytest.mark.parametrize("hostile", list(HOSTILE))
async def test_a_registration_a_push_could_fail_on_is_passed_over_and_the_job_runs(
    mediator: Mediator, hostile: str
) -> None:
    redis = mediator._jobs.redis
    await claim_as(mediator, "x", 4, ["default"])
    await HOSTILE[hostile](redis)
    handle = await mediator.enqueue(Quick(tag="kept"))  # no error: the job is queued as with nobody ready
    assert await redis.zscore(queue_key("default"), handle.id) is not None
    assert await redis.exists(lease_key(handle.id)) == 0
    assert await redis.zscore(push_ready_key("default"), "x") is None
    await redis.delete(running_key("default"))
    async with working(Worker(mediator, WorkerSettings(queues=["default"], name="next", **FAST))):
        assert await handle.result(timeout=5) == "kept@next"


async def test_a_claim_drops_an_inbox_of_another_type_and_registers(mediator: Mediator) -> None:
    redis = mediator._jobs.redis
    await redis.set(push_inbox_key("x"), "junk")
    await claim_as(mediator, "x", 4, ["default"])
    assert await redis.zscore(push_ready_key("default"), "x") is not None
    handle = await mediator.enqueue(Quick(tag="pushed"))
    assert await pushed_to(redis, "x", handle.id)


async def test_a_lapsed_lease_of_a_higher_queue_ends_pushes_of_lower_ones(mediator: Mediator) -> None:
    redis = mediator._jobs.redis
    lapsing = await mediator.enqueue(Urgent(tag="lapsing"))
    assert len(await claim_as(mediator, "", 1, ["high"], lease=300)) > 4  # a worker that then dies
    deadline = int(await redis.zscore(running_key("high"), lapsing.id) or 0)
    await claim_as(mediator, "w", 4, ["high", "low"])
    await pushes_end_at(mediator, "w", deadline)


async def test_a_due_job_queued_without_a_push_ends_pushes_of_lower_queues(mediator: Mediator) -> None:
    redis = mediator._jobs.redis
    await claim_as(mediator, "w", 4, ["high", "low"], max_bytes=400)
    big = await mediator.enqueue(Urgent(tag="x" * 500))  # over the worker's limit: its claim fails it
    assert await redis.zscore(queue_key("high"), big.id) is not None
    after = await mediator.enqueue(Quick(tag="after"), queue="low")
    assert not await pushed_to(redis, "w", after.id)
    assert await redis.zscore(queue_key("low"), after.id) is not None


async def test_a_batch_over_several_queues_pushes_nothing_and_one_of_one_queue_pushes(
    mediator: Mediator,
) -> None:
    redis = mediator._jobs.redis
    await claim_as(mediator, "w", 1, ["high", "default"])  # one free slot
    low, high = await mediator.enqueue_many([Quick(tag="low"), Urgent(tag="high")])
    assert await redis.zscore(queue_key("high"), high.id) is not None
    assert not await pushed_to(redis, "w", low.id)
    assert await redis.zscore(queue_key("default"), low.id) is not None
    await redis.delete(queue_key("default"), queue_key("high"))
    await claim_as(mediator, "w", 0, ["high", "default"])  # takes its registration back
    await claim_as(mediator, "v", 2, ["default"])
    first, second = await mediator.enqueue_many([Quick(tag="1"), Quick(tag="2")])
    assert await pushed_to(redis, "v", first.id)
    assert await pushed_to(redis, "v", second.id)
