"""Safety: nothing from Redis is unpickled, bad jobs fail cleanly, and workers and waiters survive outages.

Also: apps on different databases of one Redis server stay apart, and `run_worker` stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import pickle
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from arq.jobs import serialize_job
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from arq_mediator import (
    Context,
    JobEnvelope,
    JobFailedError,
    JobHandle,
    JobStatus,
    Mediator,
    Notification,
    QueueNotConnectedError,
    Request,
    ResultRecord,
    Worker,
    WorkerSettings,
    run_worker,
)
from arq_mediator._jobs import now_ms
from tests.keys import Channels, deliveries_key, job_key, queue_key
from tests.redis_databases import RedisDatabases

from .conftest import BaseProbe, running_worker
from .waiting import FAST, eventually, polled

ENVELOPE_ERROR = "arq_mediator.EnvelopeError"


def detonate(path: str) -> None:
    """What unpickling a `Bomb` calls: leave a marker file behind."""
    Path(path).write_text("unpickled")


class Bomb:
    """An object whose unpickling runs code: the reason a worker must never unpickle job bodies."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (detonate, (self.path,))


class Strict(Request[int]):
    n: int


class Announced(Notification):
    pass


class Gated(Request[str]):
    pass


@dataclass
class Probe(BaseProbe):
    """Per-test state: the arguments the Strict handler ran with; Gated waits for `release`."""

    ran: list[int] = field(default_factory=list)


async def strict(request: Strict, ctx: Context) -> int:
    ctx.resource(Probe).ran.append(request.n)
    return request.n


async def gated(request: Gated, ctx: Context) -> str:
    probe = ctx.resource(Probe)
    probe.started.set()
    await probe.release.wait()
    return "through"


async def on_announced(event: Announced, ctx: Context) -> None:
    pass


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(max_tries=3)(strict)
    mediator.handler(on_announced)
    mediator.handler(gated)


async def plant(redis: Redis, job_id: str, body: bytes | str, queue: str = "default") -> None:
    """Store *body* as job *job_id* and queue it, as a foreign producer writing arq's layout would."""
    await redis.set(job_key(job_id), body)
    await redis.zadd(queue_key(queue), {job_id: now_ms()})


def unique(name: str) -> str:
    """Return a job id of *name* no other run uses: completion channels are shared by every database."""
    return f"{name}-{uuid.uuid4().hex}"


def envelope(job_id: str, **fields: Any) -> str:
    """Return a well-formed JSON envelope for *job_id*, with *fields* replaced."""
    values: dict[str, Any] = {
        "id": job_id,
        "type": Strict.message_name,
        "payload": {"n": 1},
        "queue": "default",
        "max_tries": 3,
        "enqueued_at": now_ms(),
    }
    return JobEnvelope.model_validate(values | fields).model_dump_json()


async def failure_of(mediator: Mediator, job_id: str) -> tuple[JobFailedError, ResultRecord]:
    """Await job *job_id*, which must fail; return the raised JobFailedError and the job's record."""
    with pytest.raises(JobFailedError) as caught:
        await mediator.job(job_id).result(timeout=3)
    record = await mediator.job(job_id).record()
    assert record is not None
    return caught.value, record


async def test_a_pickled_arq_job_is_never_unpickled(
    mediator: Mediator, redis: Redis, probe: Probe, tmp_path: Path
) -> None:
    """A pickled arq job is failed with an EnvelopeError, its bytes kept, and nothing in it executed."""
    control, marker = tmp_path / "control", tmp_path / "marker"
    pickle.loads(pickle.dumps(Bomb(str(control))))
    assert control.exists()  # the bomb is live: unpickling it does run code
    body = serialize_job("strict", (Bomb(str(marker)),), {}, 1, now_ms())
    pickled = unique("pickled")
    await plant(redis, pickled, body)

    async with running_worker(mediator, **FAST):
        failure, record = await failure_of(mediator, pickled)
        assert not marker.exists()
        after = await mediator.enqueue(Strict(n=7))
        assert await after.result(timeout=3) == 7

    assert failure.remote_type == ENVELOPE_ERROR
    assert "pickle" in failure.remote_message
    assert record.raw is not None
    assert base64.b64decode(record.raw) == body
    assert record.job is None
    assert [r.id for r in await mediator.failed_jobs("default")] == [pickled]
    assert probe.ran == [7]
    assert not marker.exists()


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\xffnot json at all",
        b'{"hello": "world"}',
        envelope("future").replace('"v":1', '"v":2').encode(),
        envelope("extra").replace('"v":1', '"v":1,"surprise":true').encode(),
    ],
    ids=["garbage", "json-not-an-envelope", "unknown-version", "unknown-field"],
)
async def test_an_unreadable_body_fails_with_envelope_error(
    mediator: Mediator, redis: Redis, probe: Probe, body: bytes
) -> None:
    """A body that is not a valid JSON envelope is failed at once with EnvelopeError, never retried."""
    unreadable = unique("unreadable")
    await plant(redis, unreadable, body)
    async with running_worker(mediator, **FAST) as worker:
        failure, record = await failure_of(mediator, unreadable)

    assert failure.remote_type == ENVELOPE_ERROR
    assert "not a valid arq-mediator JSON envelope" in failure.remote_message
    assert "pickle" not in failure.remote_message
    assert record.raw is not None
    assert base64.b64decode(record.raw) == body
    assert (worker.counters.failed, worker.counters.retried) == (1, 0)
    assert probe.ran == []


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"type": "elsewhere.Missing"}, "elsewhere.Missing"),
        ({"type": Announced.message_name, "handler": "gone.handler", "payload": {}}, "gone.handler"),
    ],
    ids=["unknown-type", "unknown-notification-handler"],
)
async def test_an_unknown_message_type_fails_with_handler_not_found(
    mediator: Mediator, redis: Redis, fields: dict[str, Any], named: str
) -> None:
    """A job of a type (or handler) this worker does not know fails with NoHandlerError naming both."""
    unknown = unique("unknown")
    await plant(redis, unknown, envelope(unknown, **fields))
    async with running_worker(mediator, name="safety-worker", **FAST) as worker:
        failure, record = await failure_of(mediator, unknown)

    assert failure.remote_type == "arq_mediator.NoHandlerError"
    assert "safety-worker" in failure.remote_message
    assert named in failure.remote_message
    assert record.job is not None  # kept, to requeue once a worker that knows it is deployed
    assert worker.counters.retried == 0


async def test_a_payload_failing_validation_fails_without_retry(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """A payload its type rejects fails on try 1 with pydantic's ValidationError, despite tries left."""
    invalid = unique("invalid")
    await plant(redis, invalid, envelope(invalid, payload={"n": "not a number"}))
    async with running_worker(mediator, **FAST) as worker:
        failure, record = await failure_of(mediator, invalid)

    assert failure.remote_type == "pydantic_core._pydantic_core.ValidationError"
    assert "Strict" in failure.remote_message
    assert record.try_number == 1
    assert record.job is not None
    assert record.job.max_tries == 3
    assert worker.counters.retried == 0
    assert probe.ran == []


async def test_a_job_that_keeps_losing_its_worker_is_failed_as_poison(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """A job handed out max_lost times without finishing fails with WorkerLostError, not run again."""
    handle = await mediator.enqueue(Strict(n=1))
    await redis.set(deliveries_key(handle.id), 5)  # five workers took it and died

    async with running_worker(mediator, **FAST):
        failure, record = await failure_of(mediator, handle.id)

    assert failure.remote_type == "arq_mediator.WorkerLostError"
    assert "lost its worker 5 times" in failure.remote_message
    assert record.job is not None
    assert probe.ran == []
    assert await handle.status() is JobStatus.FAILED


async def test_an_envelope_naming_another_id_cannot_finish_that_other_job(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """A job whose envelope names another job's id is settled under its own id, once, leaving the other be."""
    claimed, someone_else = unique("claimed"), unique("someone-else")
    await plant(redis, claimed, envelope(someone_else, payload={"n": 3}))
    async with running_worker(mediator, **FAST):
        outcome: JobHandle[Any] = mediator.job(claimed)
        with contextlib.suppress(
            JobFailedError
        ):  # rejecting the mismatched envelope is as good as running it
            await outcome.result(timeout=1)
        assert await outcome.status() in (JobStatus.SUCCEEDED, JobStatus.FAILED)
        assert await mediator.job(someone_else).status() is JobStatus.NOT_FOUND
    assert len(probe.ran) <= 1  # never run again when a lease lapses


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"queues": []}, "one or more"),
        ({"queues": ["a", ""]}, "one or more"),
        ({"queues": ["a", "a"]}, "distinct"),
        ({"queues": ["a"], "max_jobs": 0}, "max_jobs"),
        ({"queues": ["a"], "heartbeat": 5.0, "lease": 5.0}, "shorter than the lease"),
        ({"queues": ["a"], "heartbeat": 0.0}, "positive"),
    ],
    ids=["no-queue", "empty-name", "duplicate", "no-slots", "heartbeat-not-shorter", "heartbeat-zero"],
)
async def test_worker_settings_refuse_nonsense(settings: dict[str, Any], message: str) -> None:
    """WorkerSettings refuses configurations a worker could not run safely, before any worker exists."""
    with pytest.raises(ValueError, match=message):
        WorkerSettings(**settings)


async def test_a_worker_records_only_its_configuration_until_run(mediator: Mediator) -> None:
    """Constructing a Worker takes no job and writes nothing; its name defaults to host and pid."""
    worker = Worker(mediator, WorkerSettings(queues=["default"]))

    assert worker.running == 0
    assert "-" in worker.name
    assert (worker.counters.succeeded, worker.counters.failed, worker.counters.retried) == (0, 0, 0)
    assert await mediator._jobs.redis.dbsize() == 0


async def kill_pubsub_clients(redis: Redis) -> int:
    """Close, server side, every pub/sub connection to this test's database, as a network blip would."""
    db = int(redis.connection_pool.connection_kwargs.get("db", 0))
    killed = 0
    for client in await redis.client_list():
        if int(client["db"]) == db and "P" in client["flags"]:
            killed += await redis.client_kill_filter(_id=client["id"])
    return killed


async def subscribers(redis: Redis, channel: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count)


async def test_a_worker_resubscribes_after_losing_its_pubsub_connection(
    mediator: Mediator, redis: Redis, channels: Channels
) -> None:
    """A worker whose wake-up connection drops reconnects and is again woken at once by new jobs."""
    queue = f"blip-{uuid.uuid4().hex[:8]}"  # channels are server-wide: a name nobody else listens to
    settings = FAST | {"idle_check": 30.0}  # without a wake-up, a new job would wait half a minute
    async with running_worker(mediator, queues=[queue], **settings):
        await polled(lambda: subscribers(redis, channels.wake(queue)), lambda n: n == 1)
        assert await kill_pubsub_clients(redis) >= 1
        await polled(lambda: subscribers(redis, channels.wake(queue)), lambda n: n == 0)
        await polled(lambda: subscribers(redis, channels.wake(queue)), lambda n: n == 1, what="resubscribed")

        handle = await mediator.enqueue(Strict(n=4), queue=queue)
        assert await handle.result(timeout=2) == 4


async def test_a_waiter_hears_of_a_job_finishing_while_its_connection_was_down(
    mediator: Mediator, redis: Redis, probe: Probe, channels: Channels
) -> None:
    """A result wait survives its pub/sub connection dropping, even if the job finishes meanwhile."""
    async with running_worker(mediator, **FAST):
        handle = await mediator.enqueue(Gated())
        await asyncio.wait_for(probe.started.wait(), 3)
        waiter = asyncio.create_task(handle.result(timeout=4))
        await polled(lambda: subscribers(redis, channels.done(handle.id)), lambda n: n == 1)

        assert await kill_pubsub_clients(redis) >= 1
        probe.release.set()  # finishes (and publishes) while the waiter's connection is down

        assert await waiter == "through"


async def test_a_waiter_resubscribes_after_its_connection_drops(
    mediator: Mediator, redis: Redis, probe: Probe, channels: Channels
) -> None:
    """A result wait whose connection drops subscribes again, and hears of the job finishing after that."""
    async with running_worker(mediator, **FAST):
        handle = await mediator.enqueue(Gated())
        await asyncio.wait_for(probe.started.wait(), 3)
        waiter = asyncio.create_task(handle.result(timeout=4))
        await polled(lambda: subscribers(redis, channels.done(handle.id)), lambda n: n == 1)

        assert await kill_pubsub_clients(redis) >= 1
        await polled(lambda: subscribers(redis, channels.done(handle.id)), lambda n: n == 0)
        await polled(
            lambda: subscribers(redis, channels.done(handle.id)), lambda n: n == 1, what="resubscribed"
        )
        probe.release.set()

        assert await waiter == "through"


def failing_first(script: Callable[..., Awaitable[Any]], calls: list[str], name: str) -> Any:
    """Wrap a Redis script so that its first call fails as if Redis were unreachable."""

    async def call(*, args: list[Any]) -> Any:
        calls.append(name)
        if calls.count(name) == 1:
            raise RedisConnectionError(f"{name}: Redis is unreachable (simulated)")
        return await script(args=args)

    return call


async def test_a_worker_rides_out_redis_errors(
    mediator: Mediator, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim, heartbeat or completion failing on a Redis error is retried, and the job runs once."""
    scripts = mediator._jobs.scripts
    calls: list[str] = []
    for name in ("claim", "heartbeat"):
        monkeypatch.setattr(scripts, name, failing_first(getattr(scripts, name), calls, name))
    complete_many = mediator._jobs.complete_many

    async def failing_complete(batch: list[list[Any]]) -> list[bool]:
        calls.append("complete")
        if calls.count("complete") == 1:
            raise RedisConnectionError("complete: Redis is unreachable (simulated)")
        return await complete_many(batch)

    monkeypatch.setattr(mediator._jobs, "complete_many", failing_complete)

    handle = await mediator.enqueue(Strict(n=6))
    async with running_worker(mediator, name="survivor", **FAST) as worker:
        assert await handle.result(timeout=3) == 6
        await polled(mediator.stats, lambda stats: [w.name for w in stats.workers] == ["survivor"])

    assert {name for name in calls if calls.count(name) >= 2} == {"claim", "heartbeat", "complete"}
    assert probe.ran == [6]
    assert (worker.counters.succeeded, worker.counters.failed) == (1, 0)


async def test_run_worker_works_until_sigterm_then_returns_the_stopped_worker(
    redis_url: str, probe: Probe
) -> None:
    """`run_worker` opens the mediator, works until SIGTERM, removes its signal handlers and returns."""
    mediator = Mediator(redis=redis_url)
    mediator.handler(strict)
    mediator.provide(probe)
    before = signal.getsignal(signal.SIGTERM)
    settings = WorkerSettings(queues=["default"], name="signalled", **FAST)

    def ready() -> bool:
        try:
            mediator._jobs  # noqa: B018 - raises until run_worker has opened the mediator
        except QueueNotConnectedError:
            return False
        return signal.getsignal(signal.SIGTERM) != before

    running = asyncio.create_task(run_worker(mediator, settings))
    try:
        await eventually(ready, what="the mediator opened and the SIGTERM handler installed")
        handle = await mediator.enqueue(Strict(n=2))
        assert await handle.result(timeout=3) == 2
    finally:
        if signal.getsignal(signal.SIGTERM) != before:  # never signal ourselves without a handler
            signal.raise_signal(signal.SIGTERM)
        worker = await asyncio.wait_for(running, 5)

    assert worker.name == "signalled"
    assert worker.counters.succeeded == 1
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(QueueNotConnectedError):
        mediator._jobs  # noqa: B018 - the mediator was closed on the way out
    worker.stop()  # stopping a stopped worker is harmless


@pytest.fixture
async def neighbour(redis_databases: RedisDatabases) -> AsyncIterator[tuple[Mediator, Probe, str]]:
    """Another app on another database of the same Redis server, its probe, and a token for shared ids.

    Only keys carrying the token are written there, and they are deleted after, so whatever else that
    database holds is left alone.
    """
    token = uuid.uuid4().hex
    other = Mediator(redis=redis_databases.url("neighbour"))
    other.handler(strict)
    other.handler(gated)
    probe = other.provide(Probe())
    async with other:
        try:
            yield other, probe, token
        finally:
            keys = [key async for key in other._jobs.redis.scan_iter(match=f"*{token}*")]
            if keys:
                await other._jobs.redis.delete(*keys)


async def test_a_result_published_in_another_database_is_not_taken_for_this_ones(
    mediator: Mediator, redis: Redis, neighbour: tuple[Mediator, Probe, str], channels: Channels
) -> None:
    """A job finishing in another database does not answer `result()` for a same-id job in this one."""
    other, _, token = neighbour
    job_id, queue = f"shared-{token}", f"theirs-{token}"
    mine = await mediator.enqueue(Strict(n=1), job_id=job_id)  # no worker here: it stays queued
    waiter = asyncio.create_task(mine.result(timeout=1.5))
    await polled(lambda: subscribers(redis, channels.done(job_id)), lambda n: n == 1)

    theirs = await other.enqueue(Strict(n=100), job_id=job_id, queue=queue)
    async with running_worker(other, queues=[queue], **FAST):

        async def theirs_done() -> bool:
            return await theirs.status() is JobStatus.SUCCEEDED

        await eventually(theirs_done)

    with pytest.raises(TimeoutError):
        await waiter  # this database's job never ran, so there is nothing to return
    assert await mine.status() is JobStatus.QUEUED


async def test_aborting_a_job_in_another_database_leaves_this_ones_alone(
    mediator: Mediator, probe: Probe, neighbour: tuple[Mediator, Probe, str]
) -> None:
    """Aborting a running job in another database does not cancel the same-id job running in this one."""
    other, other_probe, token = neighbour
    job_id, mine_queue, theirs_queue = f"shared-{token}", f"mine-{token}", f"theirs-{token}"
    async with (
        running_worker(mediator, queues=[mine_queue], **FAST),
        running_worker(other, queues=[theirs_queue], **FAST),
    ):
        mine = await mediator.enqueue(Gated(), job_id=job_id, queue=mine_queue)
        theirs = await other.enqueue(Gated(), job_id=job_id, queue=theirs_queue)
        await asyncio.wait_for(asyncio.gather(probe.started.wait(), other_probe.started.wait()), 3)

        assert await theirs.abort() is True

        async def theirs_aborted() -> bool:
            return await theirs.status() is JobStatus.ABORTED

        await eventually(theirs_aborted)
        probe.release.set()

        async def mine_finished() -> bool:
            return await mine.status() in (JobStatus.SUCCEEDED, JobStatus.FAILED)

        await eventually(mine_finished)  # statuses only: awaiting results would share a channel too
        record = await mine.record()
        assert record is not None
        assert record.ok, record.error
        assert record.value == "through"


async def test_outcomes_are_recorded_after_redis_forgets_its_scripts(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """After SCRIPT FLUSH (as after a Redis restart) the worker reloads its scripts and records outcomes."""
    handle = await mediator.enqueue(Strict(n=3))
    await redis.script_flush()
    async with running_worker(mediator, **FAST):
        assert await handle.result(timeout=3) == 3
        second = await mediator.enqueue(Strict(n=4))
        await redis.script_flush()
        assert await second.result(timeout=3) == 4
    assert probe.ran == [3, 4]


async def test_an_outcome_redis_refuses_is_recorded_when_it_takes_it(
    mediator: Mediator, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outcome Redis refuses with an error reply is written again until it lands; the job runs once."""
    complete_many = mediator._jobs.complete_many
    refusals: list[int] = []

    async def refusing_once(batch: list[list[Any]]) -> list[bool]:
        if not refusals:
            refusals.append(len(batch))
            raise ResponseError("simulated error reply while recording")
        return await complete_many(batch)

    monkeypatch.setattr(mediator._jobs, "complete_many", refusing_once)
    handle = await mediator.enqueue(Strict(n=8))
    async with running_worker(mediator, **FAST) as worker:
        assert await handle.result(timeout=8) == 8
    assert refusals == [1]
    assert probe.ran == [8]
    assert (worker.counters.succeeded, worker.counters.failed) == (1, 0)
