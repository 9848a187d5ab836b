"""Results: typed values, remote failures, timeouts, many waiters, status transitions and result records."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, assert_type

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from arq_mediator import (
    Context,
    JobFailedError,
    JobHandle,
    JobNotFoundError,
    JobStatus,
    Mediator,
    Request,
    ResultRecord,
)
from arq_mediator._jobs import now_ms
from tests.keys import Channels

from .conftest import BaseProbe, running_worker
from .waiting import FAST, eventually


class Out(BaseModel):
    n: int
    label: str = ""


class Double(Request[Out]):
    n: int


class Explode(Request[int]):
    n: int


class Hold(Request[str]):
    tag: str


class Unserializable(Request[dict[str, Any]]):
    pass


class Kaboom(RuntimeError):
    """The handler's own exception type, to be named in the failure record."""


@dataclass
class Probe(BaseProbe):
    """Per-test state: Hold handlers signal `started` and wait for `release`."""

    holds: int = 0


async def double(request: Double, ctx: Context) -> Out:
    return Out(n=request.n * 2, label=f"doubled {request.n}")


async def explode(request: Explode, ctx: Context) -> int:
    raise Kaboom(f"went off: {request.n}")


async def hold(request: Hold, ctx: Context) -> str:
    probe = ctx.resource(Probe)
    probe.holds += 1
    probe.started.set()
    await probe.release.wait()
    return request.tag


async def unserializable(request: Unserializable, ctx: Context) -> dict[str, Any]:
    return {"handle": object()}


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(double)
    mediator.handler(explode)
    mediator.handler(hold)
    mediator.handler(unserializable)


async def test_result_is_the_typed_response(mediator: Mediator) -> None:
    """`result()` returns the handler's response validated back into the declared pydantic model."""
    handle = await mediator.enqueue(Double(n=4))
    async with running_worker(mediator, **FAST):
        value = await handle.result(timeout=3)

    assert_type(value, Out)
    assert isinstance(value, Out)
    assert value == Out(n=8, label="doubled 4")


async def test_failed_job_raises_job_failed_describing_the_remote_error(mediator: Mediator) -> None:
    """A failed job's result raises JobFailedError naming the handler exception's type, message, traceback."""
    handle = await mediator.enqueue(Explode(n=3))
    async with running_worker(mediator, **FAST):
        with pytest.raises(JobFailedError) as caught:
            await handle.result(timeout=3)

    failure = caught.value
    assert failure.job_id == handle.id
    assert failure.remote_type == f"{Kaboom.__module__}.Kaboom"
    assert failure.remote_message == "went off: 3"
    assert "explode" in failure.remote_traceback
    assert "Kaboom: went off: 3" in failure.remote_traceback
    assert str(failure) == f"job {handle.id} failed with {failure.remote_type}: went off: 3"
    assert await handle.status() is JobStatus.FAILED


async def test_result_timeout_leaves_the_job_queued(mediator: Mediator) -> None:
    """`result(timeout=...)` on a job no worker takes raises TimeoutError, and the job stays QUEUED."""
    handle = await mediator.enqueue(Double(n=1))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await handle.result(timeout=0.2)

    assert 0.2 <= time.monotonic() - started < 1.0
    assert await handle.status() is JobStatus.QUEUED


async def test_result_of_an_unknown_job_raises_job_not_found(mediator: Mediator) -> None:
    """An id neither queued, running nor finished raises JobNotFoundError instead of waiting forever."""
    unknown = mediator.job("no-such-job", Double)

    with pytest.raises(JobNotFoundError, match="no-such-job"):
        await unknown.result(timeout=1)
    assert await unknown.status() is JobStatus.NOT_FOUND
    assert await unknown.record() is None


async def test_twenty_waiters_on_one_job_all_resolve(
    mediator: Mediator, redis: Redis, probe: Probe, channels: Channels
) -> None:
    """Twenty concurrent `result()` calls on the same job share one subscription and all get the value."""
    async with running_worker(mediator, **FAST):
        handle = await mediator.enqueue(Hold(tag="shared"))
        await asyncio.wait_for(probe.started.wait(), 3)
        waiters = [asyncio.create_task(mediator.job(handle.id, Hold).result(timeout=3)) for _ in range(20)]

        async def subscribed() -> bool:
            [(_, subscribers)] = await redis.pubsub_numsub(channels.done(handle.id))
            return int(subscribers) == 1

        await eventually(subscribed, what="the waiters' subscription")
        probe.release.set()
        values = await asyncio.gather(*waiters)

    assert values == ["shared"] * 20
    assert probe.holds == 1


async def test_concurrent_waiters_on_distinct_jobs_of_a_fresh_mediator_all_resolve(
    mediator: Mediator,
) -> None:
    """Awaiting many jobs' results at once, as the mediator's first waits, resolves every one of them."""
    async with running_worker(mediator, max_jobs=20, **FAST):
        handles = await mediator.enqueue_many([Double(n=i) for i in range(20)])
        values = await asyncio.gather(*(handle.result(timeout=1) for handle in handles))

    assert values == [Out(n=2 * i, label=f"doubled {i}") for i in range(20)]


def hold_result_subscriptions(
    monkeypatch: pytest.MonkeyPatch, channels: Channels
) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold back every SUBSCRIBE to a completion channel until the returned gate is set, as a slow link would.

    Returns:
        An event set when a subscription is held, and the gate that lets it through.
    """
    entered, gate = asyncio.Event(), asyncio.Event()
    subscribe = PubSub.subscribe

    async def gated_subscribe(self: PubSub, *subscribed: Any, **handlers: Any) -> Any:
        if any(str(channel).startswith(channels.done_prefix) for channel in subscribed):
            entered.set()
            await gate.wait()
        return await subscribe(self, *subscribed, **handlers)

    monkeypatch.setattr(PubSub, "subscribe", gated_subscribe)
    return entered, gate


async def test_a_waiter_joining_while_the_subscription_is_in_flight_sees_the_result(
    mediator: Mediator, probe: Probe, monkeypatch: pytest.MonkeyPatch, channels: Channels
) -> None:
    """A second waiter joining while the first one's subscription is in flight still gets the result."""
    async with running_worker(mediator, **FAST):  # the worker subscribes to its channels before the patch
        handle = await mediator.enqueue(Hold(tag="late"))
        await asyncio.wait_for(probe.started.wait(), 3)

        entered, gate = hold_result_subscriptions(monkeypatch, channels)
        status_read = asyncio.Event()
        status = mediator._jobs.status

        async def observed_status(job_id: str) -> tuple[JobStatus, ResultRecord | None]:
            outcome = await status(job_id)
            status_read.set()
            return outcome

        monkeypatch.setattr(mediator._jobs, "status", observed_status)

        first = asyncio.create_task(handle.result(timeout=3))
        await asyncio.wait_for(entered.wait(), 3)  # the first waiter's SUBSCRIBE is held back
        second = asyncio.create_task(mediator.job(handle.id, Hold).result(timeout=1))
        with contextlib.suppress(TimeoutError):  # a correct waiter may instead wait for the subscription
            await asyncio.wait_for(status_read.wait(), 0.2)
        probe.release.set()  # the job finishes and publishes while nobody is subscribed yet

        async def finished() -> bool:
            return await handle.status() is JobStatus.SUCCEEDED

        await eventually(finished)
        gate.set()

        assert await first == "late"
        assert await second == "late"


async def test_result_timeout_bounds_the_whole_wait(
    mediator: Mediator, monkeypatch: pytest.MonkeyPatch, channels: Channels
) -> None:
    """`result(timeout=...)` raises TimeoutError on time even when Redis is slow to confirm a subscription."""
    handle = await mediator.enqueue(Double(n=1))  # no worker: it stays queued
    entered, gate = hold_result_subscriptions(monkeypatch, channels)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):  # a backstop, so the test ends either way
                await handle.result(timeout=0.2)
    finally:
        gate.set()
    elapsed = time.monotonic() - started

    assert entered.is_set()
    assert elapsed < 0.8, f"result(timeout=0.2) took {elapsed:.2f}s"


async def test_result_of_a_finished_job_returns_at_once(mediator: Mediator) -> None:
    """After the job finished (and its worker is gone), `result()` returns the kept value without waiting."""
    handle = await mediator.enqueue(Double(n=5))
    async with running_worker(mediator, **FAST):
        await handle.result(timeout=3)

    started = time.monotonic()
    assert await handle.result() == Out(n=10, label="doubled 5")
    assert await mediator.job(handle.id, Double).result(timeout=1) == Out(n=10, label="doubled 5")
    assert time.monotonic() - started < 0.5


async def test_result_with_a_zero_timeout_returns_a_finished_jobs_value(mediator: Mediator) -> None:
    """`result(timeout=0)` does not wait, but still returns the value of a job that already finished."""
    handle = await mediator.enqueue(Double(n=5))
    async with running_worker(mediator, **FAST):
        await handle.result(timeout=3)

    assert await handle.result(timeout=0) == Out(n=10, label="doubled 5")


async def test_result_with_a_zero_timeout_only_looks(mediator: Mediator) -> None:
    """`result(timeout=0)` raises TimeoutError for an unfinished job, JobNotFoundError for an unknown one."""
    handle = await mediator.enqueue(Double(n=1))

    with pytest.raises(TimeoutError):
        await handle.result(timeout=0)
    with pytest.raises(JobNotFoundError):
        await mediator.job("no-such-job", Double).result(timeout=0)
    assert await handle.status() is JobStatus.QUEUED


async def test_closing_the_mediator_ends_pending_result_waits(
    redis_url: str, redis: Redis, channels: Channels
) -> None:
    """A `result()` still waiting when its mediator closes ends then, instead of hanging on."""
    local = Mediator(redis=redis_url)
    local.handler(double)
    async with local:
        handle = await local.enqueue(Double(n=1))  # no worker: it never finishes
        waiter = asyncio.create_task(handle.result())

        async def subscribed() -> bool:
            [(_, subscribers)] = await redis.pubsub_numsub(channels.done(handle.id))
            return int(subscribers) == 1

        await eventually(subscribed)

    done, _ = await asyncio.wait([waiter], timeout=1)
    assert waiter in done
    assert waiter.cancelled() or waiter.exception() is not None


async def test_status_walks_from_queued_through_in_progress_to_succeeded(
    mediator: Mediator, probe: Probe
) -> None:
    """`status()` reports QUEUED before a worker, IN_PROGRESS while the handler runs, SUCCEEDED after."""
    handle = await mediator.enqueue(Hold(tag="walk"))
    assert await handle.status() is JobStatus.QUEUED
    assert await handle.record() is None

    async with running_worker(mediator, **FAST):
        await asyncio.wait_for(probe.started.wait(), 3)
        assert await handle.status() is JobStatus.IN_PROGRESS
        assert await handle.record() is None
        probe.release.set()
        assert await handle.result(timeout=3) == "walk"
        assert await handle.status() is JobStatus.SUCCEEDED


async def test_record_describes_the_finished_try(mediator: Mediator) -> None:
    """`record()` gives the finished job's value, queue, worker name, try number and timings."""
    before = now_ms()
    handle = await mediator.enqueue(Double(n=6))
    async with running_worker(mediator, name="recorder", **FAST):
        await handle.result(timeout=3)
    after = now_ms()

    record = await handle.record()
    assert record is not None
    assert record.ok
    assert record.id == handle.id
    assert record.queue == "default"
    assert record.value == {"n": 12, "label": "doubled 6"}
    assert record.error is None
    assert record.worker == "recorder"
    assert record.try_number == 1
    assert before <= record.started_at <= record.finished_at <= after


async def test_record_of_a_failed_job_keeps_error_and_envelope(mediator: Mediator) -> None:
    """A failed job's record carries the error and the envelope it ran from."""
    handle = await mediator.enqueue(Explode(n=1))
    async with running_worker(mediator, name="recorder", **FAST):
        with pytest.raises(JobFailedError):
            await handle.result(timeout=3)

    record = await handle.record()
    assert record is not None
    assert not record.ok
    assert record.error is not None
    assert record.error.type == f"{Kaboom.__module__}.Kaboom"
    assert record.job is not None
    assert record.job.type == Explode.message_name
    assert record.job.payload == {"n": 1}
    assert record.worker == "recorder"


async def test_unserializable_return_value_fails_the_job(mediator: Mediator) -> None:
    """A return value that cannot be turned into JSON fails the job with pydantic's serialization error."""
    handle = await mediator.enqueue(Unserializable())
    async with running_worker(mediator, **FAST):
        with pytest.raises(JobFailedError) as caught:
            await handle.result(timeout=3)

    assert caught.value.remote_type == "pydantic_core._pydantic_core.PydanticSerializationError"
    assert "object" in caught.value.remote_message


async def test_handle_is_compared_and_hashed_by_id(mediator: Mediator) -> None:
    """Handles of one job are equal and hash alike whatever their type or queue; their repr names both."""
    handle = await mediator.enqueue(Double(n=1))
    rebuilt: JobHandle[Any] = mediator.job(handle.id)

    assert handle == rebuilt
    assert len({handle, rebuilt}) == 1
    assert handle != handle.id
    assert repr(handle) == f"JobHandle(id={handle.id!r}, queue='default')"
