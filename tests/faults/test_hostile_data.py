"""Hostile data: whatever bytes another client of Redis writes, a worker stays up and healthy jobs run.

Each case plants one kind of bad entry next to healthy jobs, so that one claim takes them together, then
starts a worker process: the bad entry must end as a failed record saying what was wrong (with its bytes
kept, up to a cap), the healthy jobs must run once each, uncharged, and a canary enqueued afterwards must
run on the same, still living, worker.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from redis.asyncio import Redis

from arq_mediator import JobHandle, JobStatus, Mediator, ResultRecord
from arq_mediator._claims import INVALID_ID_PREFIX
from tests.jobs.process_app import STARTED_AT, Chore, runs_key
from tests.jobs.worker_processes import Workers, results, wait_for_workers, wait_until
from tests.keys import Channels, deliveries_key, job_key, queue_key

from .conftest import stays_up

# Plants one bad entry; returns its id as stored and what its failure record must say.
Plant = Callable[[Mediator, Redis], Awaitable[tuple[bytes, str]]]


async def plant_valid_job(app: Mediator) -> str:
    """Queue a healthy-looking job with no worker about; return its id."""
    handle = await app.enqueue(Chore(tag="planted"))
    return handle.id


async def wrong_type(app: Mediator, redis: Redis) -> tuple[bytes, str]:
    job_id = f"hash-{uuid.uuid4().hex}"
    await cast("Awaitable[int]", redis.hset(job_key(job_id), "not", "an envelope"))
    await redis.zadd(queue_key("default"), {job_id: 0})
    return job_id.encode(), "its job key holds a hash"


async def text_counter(app: Mediator, redis: Redis) -> tuple[bytes, str]:
    job_id = await plant_valid_job(app)
    await redis.set(deliveries_key(job_id), "lots")
    return job_id.encode(), "its delivery counter holds lots"


async def negative_counter(app: Mediator, redis: Redis) -> tuple[bytes, str]:
    job_id = await plant_valid_job(app)
    await redis.set(deliveries_key(job_id), "-100")
    return job_id.encode(), "its delivery counter holds -99"


async def binary_id(app: Mediator, redis: Redis) -> tuple[bytes, str]:
    job_id = b"\xff\xfe-" + uuid.uuid4().hex.encode()
    await redis.set(job_key("").encode() + job_id, b"\x80\x04garbage")
    await redis.zadd(queue_key("default"), {job_id: 0})
    return job_id, "is not UTF-8 text"


async def oversized(app: Mediator, redis: Redis) -> tuple[bytes, str]:
    job_id = f"huge-{uuid.uuid4().hex}"
    await redis.set(job_key(job_id), b"x" * (5 * 1024 * 1024))
    await redis.zadd(queue_key("default"), {job_id: 0})
    return job_id.encode(), "over the limit of 1048576"


async def not_json(app: Mediator, redis: Redis) -> tuple[bytes, str]:
    job_id = f"text-{uuid.uuid4().hex}"
    await redis.set(job_key(job_id), b"\x80\x04 a pickle, say")
    await redis.zadd(queue_key("default"), {job_id: 0})
    return job_id.encode(), "never unpickles"


@pytest.mark.parametrize(
    "plant", [wrong_type, text_counter, negative_counter, binary_id, oversized, not_json]
)
async def test_a_bad_entry_is_failed_with_its_reason_and_the_worker_goes_on(
    app: Mediator, workers: Workers, plant: Plant
) -> None:
    """A bad queue entry is recorded as failed, saying why; the jobs around it run once; the worker lives."""
    redis = app._jobs.redis
    key_id, reason = await plant(app, redis)
    healthy = [await app.enqueue(Chore(tag=f"healthy{i}")) for i in range(3)]
    worker = workers.start("target", ["default"], max_jobs=10)

    values = await results(healthy, timeout=10.0, diagnose=workers.logs)
    assert values == ["healthy0@target", "healthy1@target", "healthy2@target"]
    for handle in healthy:  # claimed in the same call as the bad entry, and charged nothing for it
        record = await handle.record()
        assert record is not None
        assert record.try_number == 1
        assert await redis.get(runs_key(handle.id)) == b"1"

    record_id = _record_id(key_id)
    failed = await _failed_record(app, record_id)
    assert failed.error is not None
    assert reason in failed.error.message, failed.error.message
    assert failed.raw is not None or failed.job is not None
    if failed.raw is not None:
        assert len(failed.raw) <= 22 * 1024  # 16 KiB, in base64
    assert not await redis.zscore(queue_key("default"), key_id)

    canary = await app.enqueue(Chore(tag="canary"))
    assert await results([canary], timeout=10.0, diagnose=workers.logs) == ["canary@target"]
    await stays_up(worker, seconds=0.5)


async def test_an_unreadable_queue_is_skipped_and_the_others_served(app: Mediator, workers: Workers) -> None:
    """A queue key of the wrong type is reported and skipped; the worker serves its other queues."""
    await app._jobs.redis.set(queue_key("critical"), "not a sorted set")
    worker = workers.start("target", ["critical", "default"], max_jobs=2)
    canary = await app.enqueue(Chore(tag="canary"))
    assert await results([canary], timeout=10.0, diagnose=workers.logs) == ["canary@target"]
    assert "cannot read queue critical" in worker.output()
    await stays_up(worker, seconds=0.5)


async def test_garbage_on_the_control_channels_leaves_pickup_fast(app: Mediator, workers: Workers) -> None:
    """Bytes that are not text on the abort and wake-up channels do not slow an idle worker's pickup."""
    worker = workers.start("target", ["default"], max_jobs=1)
    await wait_for_workers(app, "target", diagnose=workers.logs)
    redis = app._jobs.redis
    channels = Channels(db=0)
    for channel in (channels.abort, channels.wake("default")):
        await redis.publish(channel, b"\xff\xfe\x00 not text")

    latencies: list[float] = []
    for i in range(7):
        enqueued = time.time()
        handle = await app.enqueue(Chore(tag=f"pickup{i}"))
        await handle.result(timeout=5.0)
        started = float(await cast("Awaitable[bytes | None]", redis.hget(STARTED_AT, handle.id)) or 0)
        latencies.append(started - enqueued)

    p50 = statistics.median(latencies)
    print(f"\nidle pickup after garbage on the control channels: p50 {p50 * 1000:.1f} ms")
    assert p50 < 0.1  # a dead listener falls back to the 1 s idle check
    await stays_up(worker, seconds=0.2)


def _record_id(key_id: bytes) -> str:
    try:
        return key_id.decode()
    except UnicodeDecodeError:
        return INVALID_ID_PREFIX + key_id.hex()


async def _failed_record(app: Mediator, record_id: str) -> ResultRecord:
    handle: JobHandle[object] = app.job(record_id)

    async def failed() -> bool:
        return await handle.status() is JobStatus.FAILED

    await wait_until(failed, f"job {record_id} to be failed")
    assert record_id in {record.id for record in await app.failed_jobs("default")}
    record = await handle.record()
    assert record is not None
    return record
