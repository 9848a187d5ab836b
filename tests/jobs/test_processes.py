"""Real worker processes, started with ``python -m arq_mediator worker``: sharing, priority, crashes, stops.

Each test starts its workers as OS processes running `tests.jobs.process_app`, whose handlers record in
Redis what ran where, in which order and how many at once; the test enqueues from this process and reads
those traces back. Workers (and the private Redis server of the outage test) are stopped by PID in fixture
finalizers, whatever the test's outcome.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TypeVar, cast

import pytest
from redis.asyncio import Redis

from arq_mediator import JobStatus, Mediator
from tests.conftest import StartRedisServer
from tests.keys import deliveries_key
from tests.processes import ManagedProcess, ManagedProcesses

from . import process_app
from .process_app import (
    RAN_BY,
    STARTED_AT,
    TRIES,
    Block,
    Chore,
    Cleanup,
    Critical,
    Email,
    Report,
    Work,
    gate_key,
    peak_key,
    runs_key,
    seq_key,
    started_key,
    starts_key,
)
from .worker_processes import RedisServer, Workers, results, wait_for_workers, wait_until

T = TypeVar("T")
APP = "tests.jobs.process_app:mediator"


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[Workers]:
    """Start worker processes for the test; all of them are stopped when it ends, however it ends."""
    processes = ManagedProcesses(tmp_path)
    try:
        yield Workers(redis_url, processes)
    finally:
        processes.stop_all()


@pytest.fixture
async def app(redis_url: str) -> AsyncIterator[Mediator]:
    """Return an open mediator on the test database, with the handlers of `process_app` to enqueue with."""
    async with process_app.build(redis_url) as mediator:
        yield mediator


@pytest.fixture
async def private_redis(redis_servers: StartRedisServer) -> RedisServer:
    """Return a private redis-server (never the shared one), stopped at the end of the test."""
    return await redis_servers()


async def hash_of(redis: Redis, key: str) -> dict[str, str]:
    """Return the hash at *key*, decoded."""
    raw = await cast("Awaitable[dict[bytes, bytes]]", redis.hgetall(key))
    return {field.decode(): value.decode() for field, value in raw.items()}


async def list_of(redis: Redis, key: str) -> list[str]:
    """Return the list at *key*, decoded."""
    raw = await cast("Awaitable[list[bytes]]", redis.lrange(key, 0, -1))
    return [entry.decode() for entry in raw]


async def started_order(redis: Redis, worker: str, queue_of: dict[str, str]) -> list[str]:
    """Return the queues of *worker*'s jobs in the order it started their handlers."""
    seq = {job_id: int(value) for job_id, value in (await hash_of(redis, seq_key(worker))).items()}
    return [queue_of[job_id] for job_id in sorted(seq, key=seq.__getitem__)]


# Tests ---------------------------------------------------------------------------------------------------


async def test_two_workers_drain_a_mixed_backlog_within_their_queues_and_caps(
    app: Mediator, redis: Redis, workers: Workers
) -> None:
    """Two workers with overlapping queue sets run a 120-job backlog once each, within their caps."""
    kinds: list[type[Work]] = [Critical, Email, Report, Cleanup, Chore]
    rng = random.Random(120)
    messages = [kinds[i % 5](duration=rng.uniform(0.01, 0.03), tag=f"job{i}") for i in range(120)]
    handles = await app.enqueue_many(messages)
    queue_of = {handle.id: handle.queue or "" for handle in handles}

    workers.start("w1", ["critical", "default", "emails"], max_jobs=4)
    workers.start("w2", ["reports", "cleanup", "default"], max_jobs=2)
    values = await results(handles, timeout=20.0, diagnose=workers.logs)

    assert [value.split("@")[0] for value in values] == [m.tag for m in messages]
    runs = await redis.mget([runs_key(handle.id) for handle in handles])
    assert runs == [b"1"] * len(handles)
    ran_by = await hash_of(redis, RAN_BY)
    assert ran_by.keys() == queue_of.keys()
    allowed = {"w1": {"critical", "default", "emails"}, "w2": {"reports", "cleanup", "default"}}
    outside = {
        job_id: (worker, queue_of[job_id])
        for job_id, worker in ran_by.items()
        if queue_of[job_id] not in allowed[worker]
    }
    assert outside == {}
    assert [value.split("@")[1] for value in values] == [ran_by[handle.id] for handle in handles]
    assert int(await redis.get(peak_key("w1"))) == 4
    assert int(await redis.get(peak_key("w2"))) == 2


@pytest.mark.parametrize("max_jobs", [1, 3])
async def test_a_backlog_starts_in_queue_priority_order(
    app: Mediator, redis: Redis, workers: Workers, max_jobs: int
) -> None:
    """A worker starts a backlog's jobs highest-priority queue first: critical, then emails, then default."""
    messages: list[Work] = []
    for i in range(8):
        messages += [Chore(tag=f"d{i}"), Email(tag=f"e{i}"), Critical(tag=f"c{i}")]
    handles = await app.enqueue_many([m.model_copy(update={"duration": 0.01}) for m in messages])
    queue_of = {handle.id: handle.queue or "" for handle in handles}

    workers.start("prio", ["critical", "emails", "default"], max_jobs=max_jobs)
    await results(handles, timeout=15.0, diagnose=workers.logs)

    expected = ["critical"] * 8 + ["emails"] * 8 + ["default"] * 8
    assert await started_order(redis, "prio", queue_of) == expected
    arrived = [entry.split(":")[0] for entry in await list_of(redis, starts_key("prio"))]
    assert sorted(arrived) == sorted(expected)
    if max_jobs == 1:  # one at a time, the order the starts reached Redis is the start order too
        assert arrived == expected


async def test_a_job_of_a_killed_worker_is_finished_by_another_within_the_lease(
    app: Mediator, redis: Redis, workers: Workers
) -> None:
    """A job whose worker is SIGKILLed mid-run is run to completion by another worker once its lease ends."""
    first = workers.start("A", ["default"], max_jobs=1)
    await wait_for_workers(app, "A", diagnose=workers.logs)
    handle = await app.enqueue(Block(gate="kill"))
    await wait_until(lambda: redis.get(started_key(handle.id)), "the job to start", diagnose=workers.logs)
    assert await redis.get(started_key(handle.id)) == b"A"
    workers.start("B", ["default"], max_jobs=1)
    await wait_for_workers(app, "B", diagnose=workers.logs)

    os.kill(first.pid, signal.SIGKILL)
    killed = time.monotonic()
    assert await first.exited(timeout=5.0) == -signal.SIGKILL
    await redis.set(gate_key("kill"), 1)  # lets the second run finish; the first is gone with its process
    value = await handle.result(timeout=15.0)
    recovery = time.monotonic() - killed
    print(f"\nSIGKILL recovery: {recovery:.2f}s from the kill to the result (lease 2s, heartbeat 0.4s)")

    assert value == "kill@B"
    assert recovery <= 15.0
    assert await redis.get(runs_key(handle.id)) == b"2"
    record = await handle.record()
    assert record is not None
    assert (record.ok, record.worker, record.try_number) == (True, "B", 1)


async def test_sigterm_finishes_running_jobs_takes_no_new_ones_and_exits_zero(
    app: Mediator, redis: Redis, workers: Workers
) -> None:
    """On SIGTERM a worker lets its running jobs finish within the grace, takes no new job, and exits 0."""
    worker = workers.start("drain", ["default"], max_jobs=4, grace=5.0)
    await wait_for_workers(app, "drain", diagnose=workers.logs)
    handles = [await app.enqueue(Chore(duration=1.0, tag=f"run{i}")) for i in range(3)]

    async def all_started() -> bool:
        return all(await redis.mget([runs_key(handle.id) for handle in handles]))

    await wait_until(all_started, "the three jobs to start", diagnose=workers.logs)
    worker.process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()

    async def draining() -> bool:  # the worker's own log line: it has stopped claiming
        return "draining 3 running job(s)" in worker.output()

    await wait_until(draining, "the worker to start draining", diagnose=worker.output)
    late = await app.enqueue(Chore(tag="late"))  # a free slot remains, yet the worker must not take it
    assert await worker.exited(timeout=5.0 + 2.0) == 0
    exited = time.monotonic() - stopped

    assert exited <= 5.0 + 2.0
    assert await results(handles, timeout=1.0) == ["run0@drain", "run1@drain", "run2@drain"]
    assert await late.status() is JobStatus.QUEUED
    assert await redis.get(runs_key(late.id)) is None


async def test_sigterm_past_the_grace_gives_unfinished_jobs_back_untried(
    app: Mediator, redis: Redis, workers: Workers
) -> None:
    """Jobs still running when the grace ends go back to their queue uncounted, for a fresh first try."""
    worker = workers.start("brief", ["default"], max_jobs=3, grace=0.5)
    await wait_for_workers(app, "brief", diagnose=workers.logs)
    handles = [await app.enqueue(Block(gate="after-stop")) for _ in range(3)]

    async def all_started() -> bool:
        return all(await redis.mget([started_key(handle.id) for handle in handles]))

    await wait_until(all_started, "the three jobs to start", diagnose=workers.logs)
    worker.process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert await worker.exited(timeout=0.5 + 3.0) == 0
    print(f"\nSIGTERM with grace 0.5s: exited after {time.monotonic() - stopped:.2f}s")

    assert [await handle.status() for handle in handles] == [JobStatus.QUEUED] * 3
    assert await app.failed_jobs("default") == []
    assert await redis.mget([deliveries_key(handle.id) for handle in handles]) == [b"0"] * 3

    await redis.set(gate_key("after-stop"), 1)
    workers.start("next", ["default"], max_jobs=3)
    assert await results(handles, timeout=15.0, diagnose=workers.logs) == ["after-stop@next"] * 3
    for handle in handles:
        record = await handle.record()
        assert record is not None
        assert (record.ok, record.worker, record.try_number) == (True, "next", 1)
    tries = await hash_of(redis, TRIES)
    assert [tries[handle.id] for handle in handles] == ["1"] * 3
    assert await redis.mget([runs_key(handle.id) for handle in handles]) == [b"2"] * 3


async def test_an_idle_worker_is_woken_by_a_push_not_a_poll(
    app: Mediator, redis: Redis, workers: Workers
) -> None:
    """An idle worker starts a freshly enqueued job within milliseconds: it is pushed, not found by a poll."""
    workers.start("idle", ["default"], max_jobs=1)
    await wait_for_workers(app, "idle", diagnose=workers.logs)
    latencies: list[float] = []
    for i in range(20):
        enqueued = time.time()
        handle = await app.enqueue(Chore(tag=f"wake{i}"))
        await handle.result(timeout=5.0)
        started = float((await hash_of(redis, STARTED_AT))[handle.id])
        latencies.append(started - enqueued)

    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    print(f"\nwake-up latency over 20 jobs: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p50 < 0.050  # the fallback tick is 1 s: a poll would give a median near 500 ms


async def test_concurrent_result_waits_on_a_fresh_mediator_all_resolve(
    app: Mediator, workers: Workers
) -> None:
    """Several results awaited at once, on a mediator that has awaited none before, all arrive."""
    workers.start("waits", ["default"], max_jobs=10)
    await wait_for_workers(app, "waits", diagnose=workers.logs)
    handles = [await app.enqueue(Chore(duration=0.3, tag=f"w{i}")) for i in range(10)]
    async with asyncio.timeout(10.0):
        values = await asyncio.gather(*(handle.result(timeout=5.0) for handle in handles))
    assert values == [f"w{i}@waits" for i in range(10)]


# Redis outage ----------------------------------------------------------------------------------------------


async def outage(server: RedisServer, seconds: float, worker: ManagedProcess) -> None:
    """Stop *server* for *seconds*, checking all along that *worker* stays up; restart it and wait for it."""
    server.stop()
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # what is asserted is survival over time: watch the process throughout
        assert worker.process.poll() is None, worker.output()
        await asyncio.sleep(0.05)
    server.start()
    await server.ready()
    assert worker.process.poll() is None, worker.output()


async def test_a_worker_rides_out_a_redis_outage(private_redis: RedisServer, workers: Workers) -> None:
    """A worker survives its Redis going away and, once it is back, finishes old and new jobs."""
    await private_redis.ready()
    worker = workers.start("survivor", ["default"], max_jobs=2, redis_url=private_redis.url)
    async with process_app.build(private_redis.url) as mediator:
        await wait_for_workers(mediator, "survivor", diagnose=workers.logs)
        before = [await mediator.enqueue(Chore(duration=0.5, tag=f"old{i}")) for i in range(3)]
        client = mediator._jobs.redis

        async def two_started() -> bool:
            return sum(bool(run) for run in await client.mget([runs_key(h.id) for h in before])) >= 2

        await wait_until(two_started, "two jobs to start", diagnose=workers.logs)

        await outage(private_redis, 2.0, worker)
        after = await mediator.enqueue(Chore(tag="new"))
        values = await results([*before, after], timeout=15.0, diagnose=workers.logs)
        assert values == ["old0@survivor", "old1@survivor", "old2@survivor", "new@survivor"]
        # Full (two running), the worker claimed nothing while Redis was away: each job ran once.
        assert await client.mget([runs_key(h.id) for h in [*before, after]]) == [b"1"] * 4


async def test_a_job_outliving_its_lease_in_an_outage_is_not_restarted_by_its_own_worker(
    private_redis: RedisServer, workers: Workers
) -> None:
    """A worker cut off from Redis past the lease neither reruns its running job nor exceeds its cap."""
    await private_redis.ready()
    worker = workers.start("cut-off", ["default"], max_jobs=2, grace=0.5, redis_url=private_redis.url)
    async with process_app.build(private_redis.url) as mediator:
        await wait_for_workers(mediator, "cut-off", diagnose=workers.logs)
        client = mediator._jobs.redis
        long = await mediator.enqueue(Chore(duration=10.0, tag="long"))  # sleeps: no Redis use meanwhile
        await wait_until(
            lambda: client.get(runs_key(long.id)), "the long job to start", diagnose=workers.logs
        )

        await outage(private_redis, 2.5, worker)  # the lease (2 s) expires meanwhile
        # Enqueued behind the long job on its queue: once it ran, the worker has claimed past the long job.
        marker = await mediator.enqueue(Chore(duration=0.3, tag="marker"))
        assert await results([marker], timeout=15.0, diagnose=workers.logs) == ["marker@cut-off"]

        runs = int(await client.get(runs_key(long.id)))
        peak = int(await client.get(peak_key("cut-off")))
        assert (runs, peak) == (1, 2)


async def test_a_result_timeout_holds_while_redis_stalls(private_redis: RedisServer) -> None:
    """`result(timeout=...)` gives up on time even when Redis does not answer at all."""
    await private_redis.ready()
    async with process_app.build(private_redis.url) as mediator:
        handle = await mediator.enqueue(Chore(tag="stalled"))  # no worker: it stays queued
        await mediator._jobs.redis.client_pause(2000)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await handle.result(timeout=0.3)
        waited = time.monotonic() - began
        assert waited < 1.5, f"result(timeout=0.3) returned after {waited:.2f}s"
