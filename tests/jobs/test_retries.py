"""Retries: backoff between tries, errors not worth one, exhausted jobs, requeue, timeouts, lost workers."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from arq_mediator import (
    Backoff,
    Context,
    JobFailedError,
    JobNotFoundError,
    JobStatus,
    Mediator,
    Request,
    Stats,
)
from tests.keys import deliveries_key, job_key, lease_key, result_key

from .conftest import BaseProbe, running_worker
from .waiting import FAST, eventually, polled


class Flaky(Request[int]):
    pass


class Picky(Request[int]):
    pass


class Doomed(Request[str]):
    tag: str


class Stuck(Request[None]):
    pass


class Plain(Request[int]):
    pass


class Parked(Request[int]):
    pass


class Rogue(Request[int]):
    pass


class Overlapped(Request[int]):
    pass


@dataclass
class Probe(BaseProbe):
    """Per-test state: the tries each handler saw, with their wall-clock start times."""

    tries: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    heal: bool = False
    cancelled: int = 0
    rogue_runs: int = 0
    beaten: asyncio.Event = field(default_factory=asyncio.Event)
    never: asyncio.Event = field(default_factory=asyncio.Event)

    def saw(self, name: str, ctx: Context) -> int:
        assert ctx.job is not None
        self.tries.setdefault(name, []).append((ctx.job.try_number, time.time()))
        return ctx.job.try_number

    def numbers(self, name: str) -> list[int]:
        return [number for number, _ in self.tries.get(name, [])]


async def flaky(request: Flaky, ctx: Context) -> int:
    if ctx.resource(Probe).saw("flaky", ctx) < 3:
        raise ConnectionError("not yet")
    return 3


async def picky(request: Picky, ctx: Context) -> int:
    ctx.resource(Probe).saw("picky", ctx)
    raise ValueError("never worth another try")


async def doomed(request: Doomed, ctx: Context) -> str:
    probe = ctx.resource(Probe)
    probe.saw("doomed", ctx)
    if not probe.heal:
        raise ValueError(f"doomed {request.tag}")
    return "healed"


async def stuck(request: Stuck, ctx: Context) -> None:
    probe = ctx.resource(Probe)
    probe.saw("stuck", ctx)
    try:
        await probe.never.wait()
    except asyncio.CancelledError:
        probe.cancelled += 1
        raise


async def plain(request: Plain, ctx: Context) -> int:
    return ctx.resource(Probe).saw("plain", ctx)


async def parked(request: Parked, ctx: Context) -> int:
    probe = ctx.resource(Probe)
    number = probe.saw("parked", ctx)
    probe.started.set()
    await probe.release.wait()
    return number


async def rogue(request: Rogue, ctx: Context) -> int:
    ctx.resource(Probe).rogue_runs += 1
    inner: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    inner.cancel()  # something else cancelled what the handler awaits: not a cancellation of the job
    return await inner


async def overlapped(request: Overlapped, ctx: Context) -> int:
    probe = ctx.resource(Probe)
    number = probe.saw("overlapped", ctx)
    if number == 1:
        await probe.beaten.wait()  # a heartbeat naming this job is on its way
        raise ConnectionError("first try fails")
    return number


QUICK = Backoff(initial=0.01, factor=1, jitter=0)


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(max_tries=3, backoff=Backoff(initial=0.05, factor=2, jitter=0))(flaky)
    mediator.handler(max_tries=3, retry_on=(ConnectionError,), backoff=QUICK)(picky)
    mediator.handler(queue="doomed", max_tries=2, backoff=QUICK)(doomed)
    mediator.handler(timeout=0.1, max_tries=2, backoff=QUICK)(stuck)
    mediator.handler(backoff=QUICK)(plain)
    mediator.handler(parked)
    mediator.handler(rogue)
    mediator.handler(max_tries=2, backoff=QUICK)(overlapped)


async def test_retries_follow_the_backoff_until_a_try_succeeds(mediator: Mediator, probe: Probe) -> None:
    """A handler failing twice succeeds on try 3, each retry waiting at least its backoff delay."""
    handle = await mediator.enqueue(Flaky())
    async with running_worker(mediator, **FAST) as worker:
        assert await handle.result(timeout=4) == 3

    assert probe.numbers("flaky") == [1, 2, 3]
    starts = [started for _, started in probe.tries["flaky"]]
    for gap, expected in zip((b - a for a, b in itertools.pairwise(starts)), (0.05, 0.1), strict=True):
        assert gap >= expected - 0.002  # due times are whole milliseconds
        assert gap < expected + 1.0
    record = await handle.record()
    assert record is not None
    assert record.try_number == 3
    assert (worker.counters.retried, worker.counters.succeeded, worker.counters.failed) == (2, 1, 0)


async def test_an_exception_outside_retry_on_fails_at_once(mediator: Mediator, probe: Probe) -> None:
    """An exception not in the handler's retry_on fails the job on its first try despite tries left."""
    handle = await mediator.enqueue(Picky())
    async with running_worker(mediator, **FAST) as worker:
        with pytest.raises(JobFailedError) as caught:
            await handle.result(timeout=3)

    assert caught.value.remote_type == "builtins.ValueError"
    assert probe.numbers("picky") == [1]
    assert worker.counters.retried == 0
    record = await handle.record()
    assert record is not None
    assert record.try_number == 1


async def test_max_tries_given_to_enqueue_overrides_the_handlers(mediator: Mediator, probe: Probe) -> None:
    """`enqueue(max_tries=...)` gives one job more tries than its handler's policy."""
    handle = await mediator.enqueue(Plain(), max_tries=3)
    async with running_worker(mediator, **FAST):
        assert await handle.result(timeout=3) == 1

    record = await handle.record()
    assert record is not None
    assert record.job is None  # a success keeps no envelope
    doomed_handle = await mediator.enqueue(Doomed(tag="x"), max_tries=3)
    async with running_worker(mediator, queues=["doomed"], **FAST):
        with pytest.raises(JobFailedError):
            await doomed_handle.result(timeout=3)
    assert probe.numbers("doomed") == [1, 2, 3]


async def test_exhausted_job_is_listed_failed_and_requeue_runs_it_again(
    mediator: Mediator, probe: Probe
) -> None:
    """A job out of tries is FAILED and listed with its error and envelope; requeue runs it afresh."""
    handle = await mediator.enqueue(Doomed(tag="first"))
    async with running_worker(mediator, queues=["doomed"], **FAST):
        with pytest.raises(JobFailedError, match="doomed first"):
            await handle.result(timeout=3)
        assert await handle.status() is JobStatus.FAILED

        [record] = await mediator.failed_jobs("doomed")
        assert record.id == handle.id
        assert not record.ok
        assert record.error is not None
        assert record.error.type == "builtins.ValueError"
        assert record.error.message == "doomed first"
        assert record.try_number == 2
        assert record.job is not None
        assert (record.job.type, record.job.payload) == (Doomed.message_name, {"tag": "first"})
        assert (record.job.failures, record.job.max_tries) == (1, 2)

        probe.heal = True
        requeued = await mediator.requeue(handle.id)
        assert (requeued.id, requeued.queue) == (handle.id, "doomed")
        assert await mediator.failed_jobs("doomed") == []
        assert await requeued.result(timeout=3) == "healed"

    assert await mediator.job(handle.id, Doomed).result(timeout=1) == "healed"
    assert probe.numbers("doomed") == [1, 2, 1]  # requeued with all its tries


async def test_requeue_refuses_jobs_that_did_not_fail(mediator: Mediator) -> None:
    """`requeue` raises JobNotFoundError for an unknown id, a queued job and a job that succeeded."""
    queued = await mediator.enqueue(Plain())
    with pytest.raises(JobNotFoundError):
        await mediator.requeue("no-such-job")
    with pytest.raises(JobNotFoundError):
        await mediator.requeue(queued.id)

    async with running_worker(mediator, **FAST):
        await queued.result(timeout=3)
    with pytest.raises(JobNotFoundError, match="nothing to requeue"):
        await mediator.requeue(queued.id)


async def test_failed_jobs_are_listed_newest_first_and_expired_ones_forgotten(
    mediator: Mediator, redis: Redis
) -> None:
    """`failed_jobs` lists newest first up to `limit`, and drops ids whose failure record expired."""
    async with running_worker(mediator, queues=["doomed"], **FAST):
        handles = []
        for tag in ("a", "b", "c"):
            handle = await mediator.enqueue(Doomed(tag=tag))
            with pytest.raises(JobFailedError):
                await handle.result(timeout=3)
            handles.append(handle)

    assert [record.id for record in await mediator.failed_jobs("doomed")] == [h.id for h in handles[::-1]]
    assert [record.id for record in await mediator.failed_jobs("doomed", limit=1)] == [handles[2].id]
    await redis.delete(result_key(handles[1].id))  # as if its record expired
    assert [record.id for record in await mediator.failed_jobs("doomed")] == [handles[2].id, handles[0].id]
    assert await redis.zcard("arqm:failed:doomed") == 2
    assert await mediator.failed_jobs("no-such-queue") == []


async def test_failed_jobs_with_limit_zero_lists_nothing(mediator: Mediator) -> None:
    """`failed_jobs(queue, limit=0)` asks for no records and gets none."""
    async with running_worker(mediator, queues=["doomed"], **FAST):
        handle = await mediator.enqueue(Doomed(tag="z"))
        with pytest.raises(JobFailedError):
            await handle.result(timeout=3)
    assert len(await mediator.failed_jobs("doomed")) == 1

    assert await mediator.failed_jobs("doomed", limit=0) == []


async def test_handler_timeout_fails_the_try_and_is_retried(mediator: Mediator, probe: Probe) -> None:
    """A try outliving its handler's timeout is cancelled and fails with TimeoutError, once per try."""
    handle = await mediator.enqueue(Stuck())
    started = time.monotonic()
    async with running_worker(mediator, **FAST) as worker:
        with pytest.raises(JobFailedError) as caught:
            await handle.result(timeout=3)

    assert time.monotonic() - started < 2.0
    assert caught.value.remote_type == "builtins.TimeoutError"
    assert probe.numbers("stuck") == [1, 2]
    assert probe.cancelled == 2
    record = await handle.record()
    assert record is not None
    assert record.try_number == 2
    assert (worker.counters.retried, worker.counters.failed) == (1, 1)


async def test_a_cancelled_error_raised_by_the_handler_fails_its_try(
    mediator: Mediator, probe: Probe
) -> None:
    """A CancelledError the handler raises itself, with nobody cancelling the job, fails the try once."""
    handle = await mediator.enqueue(Rogue())
    async with running_worker(mediator, **FAST):
        try:
            with pytest.raises(JobFailedError):
                await handle.result(timeout=1)
        finally:
            runs = probe.rogue_runs

    assert runs == 1, f"the handler ran {runs} times"
    assert await handle.status() is JobStatus.FAILED


async def test_a_heartbeat_in_flight_does_not_hold_a_retry_back(
    mediator: Mediator, redis: Redis, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heartbeat sent while a try is failing does not re-lease the job and hold its retry back."""
    scripts = mediator._jobs.scripts
    heartbeat = scripts.heartbeat
    handle = await mediator.enqueue(Overlapped())

    async def heartbeat_in_flight(*, args: list[Any]) -> Any:
        if handle.id.encode() in args[5:] and not probe.beaten.is_set():
            probe.beaten.set()  # the try fails now, while this heartbeat is still on its way

            async def retry_recorded() -> bool:
                body = await redis.get(job_key(handle.id))
                return body is not None and json.loads(body)["failures"] == 1

            await eventually(retry_recorded)
        return await heartbeat(args=args)

    monkeypatch.setattr(scripts, "heartbeat", heartbeat_in_flight)
    async with running_worker(mediator, **(FAST | {"lease": 3.0})):
        assert await handle.result(timeout=1.5) == 2  # well within the 3 s a stray lease would hold it

    assert probe.numbers("overlapped") == [1, 2]


async def test_worker_counters_match_what_happened(mediator: Mediator) -> None:
    """The worker's succeeded, failed and retried counters, and its heartbeat record, match its jobs."""
    async with running_worker(mediator, queues=["default", "doomed"], **FAST) as worker:
        flaky_handle = await mediator.enqueue(Flaky())
        plain_handle = await mediator.enqueue(Plain())
        picky_handle = await mediator.enqueue(Picky())
        doomed_handle = await mediator.enqueue(Doomed(tag="d"))
        assert await flaky_handle.result(timeout=4) == 3
        assert await plain_handle.result(timeout=3) == 1
        for failing in (picky_handle, doomed_handle):
            with pytest.raises(JobFailedError):
                await failing.result(timeout=3)

        await eventually(  # a result is published just before its worker counts it
            lambda: (worker.counters.succeeded, worker.counters.failed, worker.counters.retried) == (2, 2, 3)
        )

        def reported(stats: Stats) -> bool:
            return [(w.succeeded, w.failed, w.retried) for w in stats.workers] == [(2, 2, 3)]

        await polled(mediator.stats, reported, what="the heartbeat's counters")


async def test_a_job_whose_worker_died_runs_again_without_using_a_try(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """A job claimed by a worker that died comes back once its lease expires, still on try 1."""
    handle = await mediator.enqueue(Plain())
    await redis.set(lease_key(handle.id), "dead-worker", px=300)  # claimed, then never heard of again
    await redis.incr(deliveries_key(handle.id))
    assert await handle.status() is JobStatus.IN_PROGRESS

    lease_taken = time.time()
    async with running_worker(mediator, **FAST):
        assert await handle.result(timeout=3) == 1

    [(_, started)] = probe.tries["plain"]
    assert started >= lease_taken + 0.3 - 0.05  # not before the dead worker's lease expired


async def test_a_job_given_back_on_shutdown_runs_again_without_using_a_try(
    mediator: Mediator, probe: Probe, redis: Redis
) -> None:
    """A job still running when its worker's grace period ends is given back untried and runs again."""
    handle = await mediator.enqueue(Parked())
    async with running_worker(mediator, **(FAST | {"grace": 0.1})):
        await asyncio.wait_for(probe.started.wait(), 3)
    assert await handle.status() is JobStatus.QUEUED
    assert await redis.get(deliveries_key(handle.id)) == b"0"

    probe.release.set()
    async with running_worker(mediator, **FAST):
        assert await handle.result(timeout=3) == 1
    assert probe.numbers("parked") == [1, 1]
