"""Redis misbehaving: error replies in every loop, a server hanging past a lease, workers killed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arq_mediator import Mediator
from tests.jobs.process_app import Chore, runs_key
from tests.jobs.worker_processes import RedisServer, Workers, results, wait_for_workers, wait_until

from .conftest import stays_up

# A lease long enough that a fault shorter than it must not make any job run twice.
PATIENT: dict[str, Any] = {"lease": 4.0, "heartbeat": 0.3, "max_jobs": 4}
# A short lease, so that a killed worker's jobs come back soon.
QUICK: dict[str, Any] = {"lease": 1.5, "heartbeat": 0.3, "max_jobs": 8}

Fault = Callable[[Redis, Path], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def out_of_memory(redis: Redis, directory: Path) -> AsyncIterator[None]:
    """Refuse every write with OOM, as a Redis at its maxmemory with no eviction does."""
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")
    try:
        yield
    finally:
        await redis.config_set("maxmemory", "0")


@asynccontextmanager
async def scripts_flushed(redis: Redis, directory: Path) -> AsyncIterator[None]:
    """Forget every loaded script, again and again, as SCRIPT FLUSH or a restart does."""
    for _ in range(5):
        await redis.script_flush()
        await asyncio.sleep(0.2)
    yield


@asynccontextmanager
async def read_only(redis: Redis, directory: Path) -> AsyncIterator[None]:
    """Turn the server into a read-only replica (of an empty server), as a failover does to an old master."""
    primary = RedisServer(directory / "primary")
    primary.directory.mkdir()
    primary.start()
    try:
        await primary.ready()
        await redis.replicaof("127.0.0.1", primary.port)
        yield
    finally:
        await redis.replicaof("NO", "ONE")
        primary.stop()


@pytest.mark.parametrize("fault", [out_of_memory, scripts_flushed, read_only])
async def test_a_worker_survives_error_replies_in_every_loop(
    app: Mediator, workers: Workers, server: RedisServer, tmp_path: Path, fault: Fault
) -> None:
    """Error replies to claims, heartbeats, listener and outcome writes: the worker stays, and works again."""
    redis = app._jobs.redis
    worker = workers.start("target", ["default"], **PATIENT)
    await wait_for_workers(app, "target", diagnose=workers.logs)
    running = await app.enqueue(Chore(duration=0.5, tag="running"))
    await wait_until(lambda: redis.get(runs_key(running.id)), "a job to start", diagnose=workers.logs)

    admin: Redis = Redis.from_url(server.url)
    try:
        async with fault(admin, tmp_path):  # the running job finishes in here: its outcome is refused
            await stays_up(worker, seconds=1.5)
    finally:
        await admin.aclose()

    canary = await app.enqueue(Chore(tag="canary"))
    assert await results([canary], timeout=15.0, diagnose=workers.logs) == ["canary@target"]
    await wait_for_workers(app, "target", diagnose=workers.logs)  # its heartbeat is back too
    if fault is not read_only:  # becoming a replica of an empty server wiped the data; else nothing lost
        assert await results([running], timeout=10.0, diagnose=workers.logs) == ["running@target"]
        assert await redis.get(runs_key(running.id)) == b"1"
    await stays_up(worker, seconds=0.3)


async def test_a_redis_that_hangs_past_a_lease_loses_no_job(
    app: Mediator, workers: Workers, server: RedisServer
) -> None:
    """Redis frozen (SIGSTOP) longer than a lease: callers fail fast, workers ride it out, every job ends."""
    redis = app._jobs.redis
    for name in ("one", "two"):
        workers.start(name, ["default"], max_jobs=4, lease=2.0, heartbeat=0.3)
    await wait_for_workers(app, "one", "two", diagnose=workers.logs)
    handles = [await app.enqueue(Chore(duration=1.0, tag=f"job{i}")) for i in range(16)]

    async def started() -> bool:
        return sum(bool(run) for run in await redis.mget([runs_key(h.id) for h in handles])) >= 6

    await wait_until(started, "jobs to start", diagnose=workers.logs)
    impatient = Mediator(redis=server.url, command_timeout=1.0)
    async with impatient:
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises((RedisError, OSError)):
                await impatient._jobs.redis.ping()
            failed_after = time.monotonic() - began
            # What is asserted is survival over time: the freeze lasts past the 2 s lease.
            await stays_up(*workers.processes.started, seconds=3.0)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
    assert failed_after < 2.5, f"a call to the frozen Redis took {failed_after:.1f}s to fail"

    values = await results(handles, timeout=40.0, diagnose=workers.logs)
    assert sorted(value.split("@")[0] for value in values) == sorted(f"job{i}" for i in range(16))
    runs = [int(run or 0) for run in await redis.mget([runs_key(h.id) for h in handles])]
    # Only the jobs running when Redis froze (at most one per slot: 8) may have run twice.
    assert min(runs) == 1
    assert sum(run - 1 for run in runs) <= 8, runs


async def test_workers_killed_under_load_lose_no_job(app: Mediator, workers: Workers) -> None:
    """SIGKILL a worker in the middle of a backlog, twice: every job still ends with its result."""
    redis = app._jobs.redis
    handles = [await app.enqueue(Chore(duration=0.01, tag=f"job{i}")) for i in range(300)]
    workers.start("steady", ["default"], **QUICK)
    victim = workers.start("victim-1", ["default"], **QUICK)
    for round_number in (1, 2):

        async def progressed(target: int = 100 * round_number) -> bool:
            return sum(bool(run) for run in await redis.mget([runs_key(h.id) for h in handles])) >= target

        await wait_until(progressed, "the backlog to drain further", timeout=30.0, diagnose=workers.logs)
        victim.process.send_signal(signal.SIGKILL)
        assert await victim.exited(timeout=5.0) == -signal.SIGKILL
        victim = workers.start(
            f"victim-{round_number + 1}", ["default"], max_jobs=8, lease=1.5, heartbeat=0.3
        )

    values = await results(handles, timeout=60.0, diagnose=workers.logs)
    assert sorted(value.split("@")[0] for value in values) == sorted(f"job{i}" for i in range(300))
