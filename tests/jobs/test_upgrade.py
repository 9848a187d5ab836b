"""Jobs and history written by the release before the memory cuts (32-hex ids, envelopes and result records
spelling out every default, an enqueue step line per queued job) still run, show and are found; and what
this release writes per job instead."""

from __future__ import annotations

import json
import time
import uuid

from redis.asyncio import Redis

from arq_mediator import Mediator, Request
from arq_mediator._history import history_key, index_key, steps_key
from arq_mediator._keys import QUEUE_PREFIX, job_key, result_key
from arq_mediator.dashboard._model import JobState
from arq_mediator.dashboard._store import RedisDashboardSource

from .conftest import running_worker
from .waiting import FAST, polled


class Triple(Request[int]):
    n: int


async def triple(request: Triple) -> int:
    return 3 * request.n


class Refuse(Request[None]):
    n: int


async def refuse(request: Refuse) -> None:
    raise ValueError(f"refused {request.n}")


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(triple)
    mediator.handler(refuse)


def old_envelope(job_id: str, n: int, now: int) -> str:
    """Return a job body as the release before wrote it: its version and every default spelled out."""
    return json.dumps(
        {
            "v": 1,
            "id": job_id,
            "type": Triple.message_name,
            "handler": None,
            "queue": "default",
            "max_tries": 1,
            "failures": 0,
            "enqueued_at": now,
            "due_at": None,
            "trace": {},
            "meta": {},
            "payload": {"n": n},
        },
        separators=(",", ":"),
    )


async def test_a_queued_job_keeps_a_short_id_and_no_steps_list(mediator: Mediator, redis: Redis) -> None:
    """Queued, a job due now keeps no history, a deferred one a hash; pages start with the enqueue step."""
    store = RedisDashboardSource(mediator)
    now = await mediator.enqueue(Triple(n=1))
    later = await mediator.defer(Triple(n=2), by=60)

    assert len(now.id) == len(later.id) == 16
    assert not await redis.exists(steps_key(now.id), steps_key(later.id), history_key(now.id))
    assert await redis.hget(history_key(later.id), "due") is not None  # type: ignore[misc]
    assert await redis.hmget(history_key(now.id), ["type", "queue"]) == [None, None]  # type: ignore[misc]
    queued, deferred = await store.job(now.id), await store.job(later.id)
    assert queued is not None
    assert deferred is not None
    assert [step.state for step in queued.steps] == ["enqueued"]
    assert [step.state for step in deferred.steps] == ["scheduled"]
    assert deferred.steps[0].detail is not None
    assert deferred.steps[0].detail.startswith("due at ")
    assert queued.summary.tries == 0

    async with running_worker(mediator, **FAST):
        assert await now.result(timeout=10) == 3
    finished = await store.job(now.id)
    assert finished is not None
    assert [step.state for step in finished.steps] == ["enqueued", "started", "succeeded"]
    assert finished.summary.request_type == Triple.message_name
    facts = await redis.hmget(history_key(now.id), ["type", "queue"])  # type: ignore[misc]
    assert facts == [Triple.message_name.encode(), b"default"]
    record = json.loads(await redis.get(result_key(now.id)))
    assert "error" not in record  # defaults are left out of what is kept
    assert "job" not in record


async def test_a_job_queued_by_the_release_before_runs_and_shows_its_steps_once(
    mediator: Mediator, redis: Redis
) -> None:
    """A 32-hex id, an envelope with every default, a hash and its enqueue step line: runs as before."""
    store = RedisDashboardSource(mediator)
    job_id = uuid.uuid4().hex
    now = int(time.time() * 1000)
    await redis.set(job_key(job_id), old_envelope(job_id, 5, now))
    await redis.zadd(QUEUE_PREFIX + "default", {job_id: now})
    await redis.hset(  # type: ignore[misc]
        history_key(job_id),
        mapping={
            "state": "enqueued",
            "type": Triple.message_name,
            "queue": "default",
            "enqueued": now,
            "tries": 0,
        },
    )
    await redis.rpush(steps_key(job_id), f"{now}\tenqueued\t\t\t")  # type: ignore[misc]

    queued = await store.job(job_id)
    assert queued is not None
    assert [step.state for step in queued.steps] == ["enqueued"]
    async with running_worker(mediator, **FAST):
        assert await mediator.job(job_id).result(timeout=10) == 15
    finished = await store.job(job_id)
    assert finished is not None
    assert finished.summary.state is JobState.SUCCEEDED
    assert [step.state for step in finished.steps] == ["enqueued", "started", "succeeded"]
    assert finished.payload == {"n": 5}
    page = await store.jobs(JobState.SUCCEEDED, queue="default", request_type=Triple.message_name)
    assert [row.id for row in page.items] == [job_id]


async def test_a_job_finished_under_the_release_before_is_found_and_shown(
    mediator: Mediator, redis: Redis
) -> None:
    """Its result record with null fields, its hash, steps (enqueue line, envelope line) and index entries."""
    store = RedisDashboardSource(mediator)
    job_id = uuid.uuid4().hex
    now = int(time.time() * 1000)
    record = {
        "id": job_id,
        "queue": "default",
        "ok": True,
        "type": Triple.message_name,
        "value": 21,
        "error": None,
        "job": None,
        "raw": None,
        "try_number": 1,
        "worker": "old-worker",
        "started_at": now + 1,
        "finished_at": now + 2,
    }
    await redis.set(result_key(job_id), json.dumps(record), px=60_000)
    facts = {"state": "succeeded", "type": Triple.message_name, "queue": "default", "enqueued": now}
    facts |= {"tries": 1, "started": now + 1, "worker": "old-worker", "finished": now + 2}
    await redis.hset(history_key(job_id), mapping=facts)  # type: ignore[misc]
    await redis.rpush(  # type: ignore[misc]
        steps_key(job_id),
        f"{now}\tenqueued\t\t\t",
        f"{now + 1}\tstarted\t1\told-worker\t",
        f"{now + 2}\tsucceeded\t1\told-worker\t",
        "\x1e" + old_envelope(job_id, 7, now),
    )
    for index in (
        index_key("succeeded"),
        index_key("succeeded", "default"),
        index_key("succeeded", None, Triple.message_name),
        index_key("succeeded", "default", Triple.message_name),
    ):
        await redis.zadd(index, {job_id: now + 2})

    assert await mediator.job(job_id).result(timeout=1) == 21
    page = await store.jobs(JobState.SUCCEEDED, request_type=Triple.message_name)
    assert [row.id for row in page.items] == [job_id]
    detail = await store.job(job_id)
    assert detail is not None
    assert [step.state for step in detail.steps] == ["enqueued", "started", "succeeded"]
    assert detail.result == 21
    assert detail.payload == {"n": 7}
    assert detail.summary.worker == "old-worker"


async def test_a_failure_keeps_its_envelope_once_in_its_record(mediator: Mediator, redis: Redis) -> None:
    """Its record (kept a week) carries the envelope, so the history (kept a day) keeps no copy of it."""
    store = RedisDashboardSource(mediator)
    async with running_worker(mediator, **FAST):
        handle = await mediator.enqueue(Refuse(n=4))
        await polled(lambda: redis.exists(result_key(handle.id)), bool, what="the failure recorded")
    lines = [line.decode() for line in await redis.lrange(steps_key(handle.id), 0, -1)]  # type: ignore[misc]
    assert [line.split("\t")[1] for line in lines] == ["started", "failed"]
    detail = await store.job(handle.id)
    assert detail is not None
    assert detail.payload == {"n": 4}
    assert detail.error_type == "builtins.ValueError"


async def test_a_job_aborted_before_it_started_is_listed_by_its_type(mediator: Mediator) -> None:
    """Its hash held no type while queued: the abort reads it from the envelope for the indexes."""
    store = RedisDashboardSource(mediator)
    handle = await mediator.enqueue(Triple(n=9))
    assert await handle.abort()
    page = await store.jobs(JobState.ABORTED, queue="default", request_type=Triple.message_name)
    assert [(row.id, row.request_type, row.queue) for row in page.items] == [
        (handle.id, Triple.message_name, "default")
    ]
