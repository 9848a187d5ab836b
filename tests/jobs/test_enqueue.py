"""Enqueueing: routing to queues, idempotent ids, deferral, batches, notifications and rebuilt handles."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, assert_type

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from arq_mediator import (
    Context,
    JobHandle,
    JobStatus,
    Mediator,
    NoHandlerError,
    Notification,
    QueueNotConnectedError,
    Request,
)
from tests.keys import job_key, queue_key

from .conftest import BaseProbe, running_worker
from .waiting import FAST


class Out(BaseModel):
    n: int


class Double(Request[Out]):
    n: int


class Count(Request[int]):
    n: int


class Unhandled(Request[int]):
    pass


class Pinged(Notification):
    x: int


class Unheard(Notification):
    pass


@dataclass
class Probe(BaseProbe):
    """What the handlers saw: (handler, argument, wall-clock start) per run."""

    runs: list[tuple[str, int, float]] = field(default_factory=list)

    def count(self, handler: str) -> int:
        return sum(1 for name, _, _ in self.runs if name == handler)


async def double(request: Double, ctx: Context) -> Out:
    ctx.resource(Probe).runs.append(("double", request.n, time.time()))
    return Out(n=request.n * 2)


async def count(request: Count, ctx: Context) -> int:
    ctx.resource(Probe).runs.append(("count", request.n, time.time()))
    return request.n


async def on_pinged_alpha(event: Pinged, ctx: Context) -> None:
    ctx.resource(Probe).runs.append(("alpha", event.x, time.time()))


async def on_pinged_beta(event: Pinged, ctx: Context) -> None:
    ctx.resource(Probe).runs.append(("beta", event.x, time.time()))


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(double)
    mediator.handler(queue="counting")(count)
    mediator.handler(queue="alpha")(on_pinged_alpha)
    mediator.handler(queue="beta")(on_pinged_beta)


def build(redis: str | None, probe: Probe) -> Mediator:
    """Return a mediator like the `mediator` fixture's, on *redis* (or none), not opened."""
    mediator = Mediator(redis=redis)
    register(mediator)
    mediator.provide(probe)
    return mediator


async def test_enqueue_routes_to_the_handlers_queue(mediator: Mediator, redis: Redis) -> None:
    """A request becomes one queued job on its handler's queue, stored as a JSON envelope."""
    counted = await mediator.enqueue(Count(n=1))
    doubled = await mediator.enqueue(Double(n=1))
    assert_type(counted, JobHandle[int])
    assert_type(doubled, JobHandle[Out])

    assert isinstance(counted, JobHandle)
    assert len(counted.id) == 16  # 96 random bits, url-safe: short, as it is repeated in every key
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", counted.id)
    assert counted.id != doubled.id
    assert (counted.queue, doubled.queue) == ("counting", "default")
    assert await redis.zscore(queue_key("counting"), counted.id) is not None
    assert await redis.zscore(queue_key("default"), doubled.id) is not None
    body = json.loads(await redis.get(job_key(counted.id)))
    assert body["type"] == Count.message_name
    assert body["payload"] == {"n": 1}
    assert body["queue"] == "counting"
    assert await counted.status() is JobStatus.QUEUED


async def test_queue_override_sends_the_job_elsewhere(mediator: Mediator, redis: Redis) -> None:
    """`queue=` puts the job on that queue instead of the handler's, and a worker of it runs the job."""
    handle = await mediator.enqueue(Double(n=4), queue="elsewhere")

    assert handle.queue == "elsewhere"
    assert await redis.zscore(queue_key("elsewhere"), handle.id) is not None
    assert await redis.zcard(queue_key("default")) == 0
    async with running_worker(mediator, queues=["elsewhere"], **FAST):
        assert await handle.result(timeout=3) == Out(n=8)


async def test_a_request_without_handler_writes_nothing(mediator: Mediator, redis: Redis) -> None:
    """Enqueueing, deferring or batching an unhandled request type raises before anything reaches Redis."""
    batch: list[Request[Any]] = [Double(n=1), Unhandled(), Double(n=2)]
    with pytest.raises(NoHandlerError, match="Unhandled"):
        await mediator.enqueue(Unhandled())
    with pytest.raises(NoHandlerError, match="Unhandled"):
        await mediator.defer(Unhandled(), by=1)
    with pytest.raises(NoHandlerError, match="Unhandled"):
        await mediator.enqueue_many(batch)

    assert await redis.dbsize() == 0


async def test_same_job_id_while_queued_adds_nothing(mediator: Mediator, redis: Redis, probe: Probe) -> None:
    """Enqueueing a queued job's id again returns a handle to that job, and the job runs once."""
    order = f"order-{uuid.uuid4().hex}"  # ids are unique per run: completion channels are server-wide
    first = await mediator.enqueue(Double(n=1), job_id=order)
    second = await mediator.enqueue(Double(n=50), job_id=order)

    assert first.id == second.id == order
    assert first == second
    assert await redis.zcard(queue_key("default")) == 1
    async with running_worker(mediator, **FAST):
        assert await first.result(timeout=3) == Out(n=2)
        assert await second.result(timeout=3) == Out(n=2)  # the first payload's result: one job
    assert probe.count("double") == 1
    assert await redis.zcard(queue_key("default")) == 0
    assert not await redis.exists(job_key(order))


async def test_same_job_id_after_it_finished_adds_nothing(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """While a finished job's result is kept, enqueueing its id again neither queues nor runs anything."""
    order = f"order-{uuid.uuid4().hex}"
    async with running_worker(mediator, **FAST):
        first = await mediator.enqueue(Double(n=3), job_id=order)
        assert await first.result(timeout=3) == Out(n=6)
        again = await mediator.enqueue(Double(n=99), job_id=order)

        assert again.id == order
        assert await again.status() is JobStatus.SUCCEEDED
        assert await again.result(timeout=1) == Out(n=6)
        assert await redis.zcard(queue_key("default")) == 0
        assert not await redis.exists(job_key(order))
    assert probe.count("double") == 1


async def test_same_job_id_on_another_queue_returns_the_existing_jobs_queue(
    mediator: Mediator, redis: Redis
) -> None:
    """Re-enqueueing an existing id with another queue returns a handle naming the queue the job is on."""
    order = f"order-{uuid.uuid4().hex}"
    first = await mediator.enqueue(Double(n=1), job_id=order)
    again = await mediator.enqueue(Double(n=1), job_id=order, queue="elsewhere")

    assert await redis.zcard(queue_key("elsewhere")) == 0  # nothing was added there...
    assert again.queue == first.queue == "default"  # ...so the handle should not claim it is there


@pytest.mark.parametrize("max_tries", [0, -1])
async def test_enqueue_refuses_max_tries_below_one(mediator: Mediator, redis: Redis, max_tries: int) -> None:
    """`enqueue(max_tries=...)` below 1 is refused, as a handler's policy refuses it, and writes nothing."""
    with pytest.raises(ValueError, match="max_tries"):
        await mediator.enqueue(Double(n=1), max_tries=max_tries)

    assert await redis.dbsize() == 0


@pytest.mark.parametrize(
    "delay",
    [timedelta(seconds=0.3), 0.3],
    ids=["timedelta", "seconds"],
)
async def test_defer_by_runs_after_the_delay(
    mediator: Mediator, probe: Probe, delay: timedelta | float
) -> None:
    """`defer(by=...)` keeps the job DEFERRED until its delay passes, then a running worker runs it."""
    async with running_worker(mediator, **FAST):
        before = time.time()
        handle = await mediator.defer(Double(n=5), by=delay)
        assert_type(handle, JobHandle[Out])

        assert handle.queue == "default"
        assert await handle.status() is JobStatus.DEFERRED
        assert await handle.result(timeout=3) == Out(n=10)
    [(_, _, started)] = probe.runs
    assert started >= before + 0.3 - 0.002  # scores are whole milliseconds
    assert started < before + 0.3 + 1.0


async def test_defer_at_an_aware_datetime_runs_at_that_time(mediator: Mediator, probe: Probe) -> None:
    """`defer(at=...)` with an aware datetime, in any zone, starts the job at that instant, not before."""
    plus_five = timezone(timedelta(hours=5))
    async with running_worker(mediator, **FAST):
        due = datetime.now(plus_five) + timedelta(seconds=0.3)
        handle = await mediator.defer(Double(n=6), at=due)

        assert await handle.status() is JobStatus.DEFERRED
        assert await handle.result(timeout=3) == Out(n=12)
    [(_, _, started)] = probe.runs
    assert started >= due.timestamp() - 0.002
    assert started < due.timestamp() + 1.0


async def test_defer_at_a_past_instant_queues_for_now(mediator: Mediator) -> None:
    """A due time already past queues the job ready to run rather than deferred."""
    handle = await mediator.defer(Double(n=1), at=datetime.now(UTC) - timedelta(hours=1))

    assert await handle.status() is JobStatus.QUEUED


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"by": 1.0, "at": datetime(2030, 1, 1, tzinfo=UTC)}, "exactly one of"),
        ({}, "exactly one of"),
        ({"at": datetime(2030, 1, 1)}, "timezone-aware"),  # naive on purpose
        ({"by": -0.5}, "zero or more"),
        ({"by": timedelta(seconds=-1)}, "zero or more"),
    ],
    ids=["both", "neither", "naive-at", "negative-seconds", "negative-timedelta"],
)
async def test_defer_rejects_bad_arguments(
    mediator: Mediator, redis: Redis, arguments: dict[str, Any], message: str
) -> None:
    """`defer` refuses both or neither of by/at, a naive datetime and a negative delay, writing nothing."""
    with pytest.raises(ValueError, match=message):
        await mediator.defer(Double(n=1), **arguments)

    assert await redis.dbsize() == 0


async def test_enqueue_many_returns_handles_in_order(mediator: Mediator, redis: Redis) -> None:
    """A batch of 200 requests comes back as 200 distinct handles in order, each with its own right result."""
    handles = await mediator.enqueue_many([Double(n=i) for i in range(200)])
    assert_type(handles, list[JobHandle[Out]])

    assert len(handles) == 200
    assert len({handle.id for handle in handles}) == 200
    assert {handle.queue for handle in handles} == {"default"}
    assert await redis.zcard(queue_key("default")) == 200
    async with running_worker(mediator, max_jobs=50, **FAST):
        results = [await handle.result(timeout=5) for handle in handles]
    assert results == [Out(n=2 * i) for i in range(200)]


async def test_enqueue_many_of_nothing_is_nothing(mediator: Mediator, redis: Redis) -> None:
    """An empty batch returns no handles and writes nothing."""
    assert await mediator.enqueue_many([]) == []
    assert await redis.dbsize() == 0


async def test_notification_fans_out_one_job_per_handler(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """A notification becomes one job per handler on that handler's queue, and each handler runs once."""
    handles = await mediator.enqueue_publish(Pinged(x=7))
    assert_type(handles, list[JobHandle[None]])

    assert [handle.queue for handle in handles] == ["alpha", "beta"]
    assert await redis.zcard(queue_key("alpha")) == 1
    assert await redis.zcard(queue_key("beta")) == 1
    async with running_worker(mediator, queues=["alpha", "beta"], **FAST):
        for handle in handles:
            await handle.result(timeout=3)  # a notification's job has no value: it returns None
    assert sorted((name, x) for name, x, _ in probe.runs) == [("alpha", 7), ("beta", 7)]
    for handle in handles:
        record = await handle.record()
        assert record is not None
        assert (record.ok, record.value, record.queue) == (True, None, handle.queue)


async def test_notification_job_id_gives_each_handler_its_own_id(mediator: Mediator, redis: Redis) -> None:
    """A notification's job_id becomes `<id>:<handler>` per handler, and is idempotent per handler."""
    event = f"evt-{uuid.uuid4().hex}"
    handles = await mediator.enqueue_publish(Pinged(x=1), job_id=event)
    again = await mediator.enqueue_publish(Pinged(x=2), job_id=event)

    expected = [
        f"{event}:{on_pinged_alpha.__module__}.{on_pinged_alpha.__qualname__}",
        f"{event}:{on_pinged_beta.__module__}.{on_pinged_beta.__qualname__}",
    ]
    assert [handle.id for handle in handles] == expected
    assert [handle.id for handle in again] == expected
    assert await redis.zcard(queue_key("alpha")) == 1
    assert await redis.zcard(queue_key("beta")) == 1
    body = json.loads(await redis.get(job_key(expected[0])))
    assert body["handler"] == f"{on_pinged_alpha.__module__}.{on_pinged_alpha.__qualname__}"
    assert body["payload"] == {"x": 1}


async def test_notification_queue_override_puts_every_handlers_job_there(mediator: Mediator) -> None:
    """`queue=` on a notification sends every handler's job to that one queue, where a worker runs both."""
    handles = await mediator.enqueue_publish(Pinged(x=3), queue="together")

    assert [handle.queue for handle in handles] == ["together", "together"]
    async with running_worker(mediator, queues=["together"], **FAST):
        for handle in handles:
            await handle.result(timeout=3)  # a notification's job has no value: it returns None


async def test_notification_without_handlers_queues_nothing(mediator: Mediator, redis: Redis) -> None:
    """A notification nobody handles returns no handles and writes nothing."""
    assert await mediator.enqueue_publish(Unheard()) == []
    assert await mediator.enqueue_publish(Unheard(), by=1) == []
    assert await redis.dbsize() == 0


async def test_enqueue_refuses_a_notification_and_points_to_enqueue_publish(mediator: Mediator) -> None:
    """`enqueue` takes requests only; a notification gets a TypeError naming `enqueue_publish`."""
    with pytest.raises(TypeError, match=r"use enqueue_publish\(\)"):
        await mediator.enqueue(Pinged(x=1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"for a request use enqueue\(\)"):
        await mediator.enqueue_publish(Double(n=1))  # type: ignore[arg-type]


async def test_enqueue_without_a_connection_raises(redis_url: str, probe: Probe) -> None:
    """Queue operations on a mediator with no open Redis connection raise QueueNotConnectedError."""
    unconfigured = build(None, probe)
    with pytest.raises(QueueNotConnectedError, match="async with mediator"):
        await unconfigured.enqueue(Double(n=1))
    with pytest.raises(QueueNotConnectedError):
        unconfigured.job("some-id")

    closed = build(redis_url, probe)
    async with closed:
        await closed.enqueue(Double(n=1))
    with pytest.raises(QueueNotConnectedError):
        await closed.enqueue(Double(n=1))
    with pytest.raises(QueueNotConnectedError):
        await closed.enqueue_many([Double(n=1)])


async def test_jobs_enqueued_before_the_worker_starts_are_drained(mediator: Mediator, probe: Probe) -> None:
    """Jobs queued while no worker runs wait QUEUED, and a worker started later runs them all."""
    handles = [await mediator.enqueue(Double(n=i)) for i in range(5)]
    for handle in handles:
        assert await handle.status() is JobStatus.QUEUED

    async with running_worker(mediator, **FAST):
        assert [await handle.result(timeout=3) for handle in handles] == [Out(n=2 * i) for i in range(5)]
    assert probe.count("double") == 5


async def test_rebuilt_typed_handle_validates_its_result(mediator: Mediator) -> None:
    """`mediator.job(id, RequestType)` rebuilds a typed handle whose result is the response model."""
    original = await mediator.enqueue(Double(n=21))
    rebuilt = mediator.job(original.id, Double)
    assert_type(rebuilt, JobHandle[Out])

    assert rebuilt == original
    assert rebuilt.queue is None  # a rebuilt handle does not know its queue
    async with running_worker(mediator, **FAST):
        value = await rebuilt.result(timeout=3)
    assert isinstance(value, Out)
    assert value == Out(n=42)


async def test_rebuilt_untyped_handle_returns_raw_json(mediator: Mediator) -> None:
    """`mediator.job(id)` without a type returns the result as the raw JSON value."""
    original = await mediator.enqueue(Double(n=2))
    async with running_worker(mediator, **FAST):
        await original.result(timeout=3)

    assert await mediator.job(original.id).result(timeout=1) == {"n": 4}


async def test_connect_uses_a_caller_owned_client(redis: Redis, probe: Probe) -> None:
    """`connect(redis)` runs the job API on a client the caller opened and closes."""
    mediator = build(None, probe)
    await mediator.connect(redis)
    try:
        handle = await mediator.enqueue(Count(n=9))
        async with running_worker(mediator, queues=["counting"], **FAST):
            assert await handle.result(timeout=3) == 9
    finally:
        await mediator._jobs.close()


async def test_an_envelope_leaves_out_what_is_default(mediator: Mediator, redis: Redis) -> None:
    """A request's envelope has no version, handler, due time, trace or producer facts unless needed."""
    plain = await mediator.enqueue(Double(n=1))
    deferred = await mediator.defer(Double(n=2), by=60)
    pinged, _ = await mediator.enqueue_publish(Pinged(x=1))
    bodies = [json.loads(await redis.get(job_key(handle.id))) for handle in (plain, deferred, pinged)]

    assert set(bodies[0]) == {"id", "type", "queue", "max_tries", "enqueued_at", "payload"}  # v: 1 by default
    assert set(bodies[1]) - set(bodies[0]) == {"due_at"}
    assert bodies[1]["due_at"] >= bodies[1]["enqueued_at"] + 60_000
    assert set(bodies[2]) - set(bodies[0]) == {"handler"}


async def test_a_job_queued_by_the_previous_envelope_format_still_runs(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """An envelope spelling out every default (as the release before wrote them) is read and run."""
    job_id = uuid.uuid4().hex
    now = int(time.time() * 1000)
    old = {
        "v": 1,
        "id": job_id,
        "type": Double.message_name,
        "handler": None,
        "queue": "default",
        "max_tries": 3,
        "enqueued_at": now,
        "due_at": now,
        "trace": {},
        "meta": {"host": "old-producer", "pid": "4242"},
        "payload": {"n": 21},
    }
    arguments: list[str | int] = [job_id, "default", 0, json.dumps(old), Double.message_name, ""]
    await mediator._jobs.scripts.enqueue(args=arguments)
    async with running_worker(mediator, **FAST):
        result = await mediator.job(job_id, Double).result(timeout=5)

    assert result == Out(n=42)
