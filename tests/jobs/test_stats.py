"""Stats: per-queue counts of ready, running, deferred and failed jobs, live workers, and totals."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from redis.asyncio import Redis

from arq_mediator import Context, JobFailedError, Mediator, QueueStats, Request, Stats
from tests.conftest import StartRedisServer

from .conftest import BaseProbe as Probe
from .conftest import running_worker
from .waiting import FAST, polled


class Waiting(Request[str]):
    tag: str


class Broken(Request[int]):
    pass


class Idle(Request[int]):
    pass


async def waiting(request: Waiting, ctx: Context) -> str:
    probe = ctx.resource(Probe)
    probe.started.set()
    await probe.release.wait()
    return request.tag


async def broken(request: Broken, ctx: Context) -> int:
    raise RuntimeError("broken on purpose")


async def idle(request: Idle, ctx: Context) -> int:
    return 0


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(queue="busy")(waiting)
    mediator.handler(queue="busy")(broken)
    mediator.handler(queue="idle")(idle)


async def test_stats_count_jobs_in_each_state_per_queue(mediator: Mediator, probe: Probe) -> None:
    """Stats count each queue's ready, running, deferred and failed jobs, and describe the live worker."""
    for _ in range(2):
        await mediator.enqueue(Idle())  # "idle" has no worker: these stay ready
    await mediator.defer(Idle(), by=60)

    async with running_worker(mediator, queues=["busy"], max_jobs=1, name="stats-worker", **FAST) as worker:
        with pytest.raises(JobFailedError):
            await (await mediator.enqueue(Broken())).result(timeout=3)
        held = await mediator.enqueue(Waiting(tag="held"))
        await asyncio.wait_for(probe.started.wait(), 3)
        behind = await mediator.enqueue(Waiting(tag="behind"))  # the worker's one slot is taken

        def settled(stats: Stats) -> bool:
            return [(w.running, w.failed) for w in stats.workers] == [(1, 1)]

        stats = await polled(mediator.stats, settled, what="the heartbeat of the busy worker")

        assert stats.queues == [
            QueueStats(name="busy", ready=1, running=1, deferred=0, failed=1),
            QueueStats(name="idle", ready=2, running=0, deferred=1, failed=0),
        ]
        assert stats.totals == {"ready": 3, "running": 1, "deferred": 1, "failed": 1, "workers": 1}
        [state] = stats.workers
        assert state.name == "stats-worker"
        assert state.instance == worker.instance
        assert state.queues == ["busy"]
        assert state.max_jobs == 1
        assert (state.host, state.pid) == (socket.gethostname(), os.getpid())
        assert (state.succeeded, state.retried) == (0, 0)
        assert state.started_at <= state.last_seen

        probe.release.set()
        assert await held.result(timeout=3) == "held"
        assert await behind.result(timeout=3) == "behind"


async def test_a_started_worker_appears_within_its_heartbeat_and_leaves_on_stop(mediator: Mediator) -> None:
    """A worker is listed within one heartbeat of starting, and unlisted as soon as it stops."""
    settings = {"heartbeat": 1.0, "lease": 5.0, "idle_check": 0.2, "grace": 2.0}  # the entry lives 3 s
    async with running_worker(mediator, queues=["busy", "idle"], name="visible", max_jobs=3, **settings):
        stats = await polled(mediator.stats, lambda s: len(s.workers) == 1, timeout=1.0)
        [state] = stats.workers
        assert (state.name, state.queues, state.max_jobs) == ("visible", ["busy", "idle"], 3)

    stats = await mediator.stats()
    assert stats.workers == []
    assert stats.totals["workers"] == 0


async def test_stats_include_queues_known_only_to_redis_or_to_workers(mediator: Mediator) -> None:
    """Queues no handler names still appear when Redis holds jobs for them or a live worker serves them."""
    await mediator.enqueue(Idle(), queue="adhoc")
    async with running_worker(mediator, queues=["lonely"], **FAST):
        stats = await polled(mediator.stats, lambda s: len(s.workers) == 1)

    by_name = {queue.name: queue for queue in stats.queues}
    assert sorted(by_name) == ["adhoc", "busy", "idle", "lonely"]
    assert by_name["adhoc"] == QueueStats(name="adhoc", ready=1, running=0, deferred=0, failed=0)
    assert by_name["lonely"] == QueueStats(name="lonely", ready=0, running=0, deferred=0, failed=0)


async def test_stats_of_an_empty_database_are_zero(mediator: Mediator) -> None:
    """With no job and no worker, every known queue counts zero and the totals are zero."""
    stats = await mediator.stats()

    assert [queue.name for queue in stats.queues] == ["busy", "idle"]
    assert stats.totals == {"ready": 0, "running": 0, "deferred": 0, "failed": 0, "workers": 0}


async def test_stats_read_registries_and_never_walk_the_keyspace(redis_servers: StartRedisServer) -> None:
    """Queues and workers are listed from the registries the scripts keep: no KEYS, no SCAN."""
    # Command statistics are server-wide: on a server of its own, no other test run's SCAN shows in them.
    server = await redis_servers()
    mediator = Mediator(redis=server.url)
    register(mediator)
    mediator.provide(Probe())
    async with mediator, Redis.from_url(server.url) as redis:
        await mediator.enqueue(Idle())
        async with running_worker(mediator, queues=["busy"], **FAST):
            stats = await polled(mediator.stats, lambda s: len(s.workers) == 1)
            await redis.config_resetstat()
            await mediator.stats()
            commands = await redis.info("commandstats")

    assert {queue.name for queue in stats.queues} >= {"idle", "busy"}
    assert "cmdstat_scan" not in commands
    assert "cmdstat_keys" not in commands
