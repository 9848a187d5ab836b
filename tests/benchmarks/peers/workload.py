"""The one job every system runs, and the tally its worker process keeps of it.

The job takes the name of a body and the wall-clock time it was enqueued (``sent``), and returns the time it
started. The bodies:

* ``roundtrip``: one Redis round trip, an RPUSH of ``start - sent`` to `STARTS_KEY`, which is also how the
  parent reads enqueue -> start delays without asking each system for them;
* ``noop``: nothing;
* ``sleep``: ``asyncio.sleep(SLEEP_SECONDS)``, an I/O-bound job.

The body's Redis client is one redis-py client per worker process, the same for every system, so the
systems differ only in their own machinery. Each job also counts itself in memory: first start, last end,
and the process's CPU time between them. A reporter task writes that summary to hash `TALLY_KEY` (field:
the pid) every `REPORT_EVERY` seconds while it changes, and, when the parent sets `DUMP_KEY` to a new token,
every job's end time to hash `ENDS_KEY`, so the parent can time a drain by two workers over the span
both were running.

The worker processes find their Redis in `REDIS_URL_ENV` and whether to use the system's fastest settings
in `FAST_ENV` ("1").
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

REDIS_URL_ENV = "BENCH_PEER_REDIS_URL"
FAST_ENV = "BENCH_PEER_FAST"
STARTS_KEY = "peers:starts"
TALLY_KEY = "peers:tally"
ENDS_KEY = "peers:ends"
DUMP_KEY = "peers:dump"
CONCURRENCY = 20
SLEEP_SECONDS = 0.01
BODIES = ("roundtrip", "noop", "sleep")
REPORT_EVERY = 0.05


def redis_url() -> str:
    """Return the Redis URL the parent gave this worker process (a private server's)."""
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        raise SystemExit(f"{REDIS_URL_ENV} is not set: the peer benchmark's workers run under bench_peers.py")
    return url


def fast() -> bool:
    """Tell whether this worker process runs its system's fastest documented settings."""
    return os.environ.get(FAST_ENV) == "1"


async def awaited(value: Any) -> Any:
    """Await a redis-py command result (typed sync-or-async; always awaitable on the asyncio client)."""
    return await cast("Awaitable[Any]", value)


async def body(kind: str, sent: float, started: float, redis: Redis) -> None:
    """Run the body named *kind* of a job enqueued at *sent* that started at *started*."""
    if kind == "roundtrip":
        await awaited(redis.rpush(STARTS_KEY, repr(started - sent)))
    elif kind == "sleep":
        await asyncio.sleep(SLEEP_SECONDS)
    elif kind != "noop":
        raise ValueError(f"unknown job body {kind!r}; expected one of {', '.join(BODIES)}")


class Tally:
    """What this process's jobs did: how many, first start and last end, each end, and the CPU between.

    A job reads the wall clock only: reading the process's CPU time is a system call that costs as much
    as a no-op job's whole body here, so the reporter reads it, on its first tick after jobs ended (an
    idle process uses no CPU meanwhile).
    """

    def __init__(self) -> None:
        self.count = 0
        self.first_start = self.first_cpu = self.last_end = self.last_cpu = 0.0
        self.ends: list[float] = []

    def start(self, now: float) -> None:
        """Count a job's start at wall-clock *now*."""
        if not self.first_start:
            self.first_start, self.first_cpu = now, time.process_time()

    def end(self) -> None:
        """Count a job's end."""
        self.count += 1
        self.last_end = time.time()
        self.ends.append(self.last_end)

    def summary(self) -> str:
        """Return the counts as JSON for the parent, with the CPU used since the first job started."""
        self.last_cpu = time.process_time()
        return json.dumps(
            {
                "count": self.count,
                "first_start": self.first_start,
                "last_end": self.last_end,
                "cpu": self.last_cpu - self.first_cpu,
            }
        )


class WorkerSide:
    """The body's client and the tally reporter of one worker process, made by its first job."""

    current: WorkerSide | None = None

    def __init__(self) -> None:
        self.redis: Redis = Redis.from_url(redis_url())
        self.tally = Tally()
        self.pid = str(os.getpid())
        self.reporter = asyncio.create_task(self.report())

    @classmethod
    def get(cls) -> WorkerSide:
        """Return this process's worker side, making it on the first call (inside the worker's loop)."""
        if cls.current is None:
            cls.current = WorkerSide()
        return cls.current

    async def report(self) -> None:
        """Write the tally while it changes, and the end times when the parent asks; survive Redis errors."""
        reported = -1
        dumped: bytes | None = None
        while True:
            await asyncio.sleep(REPORT_EVERY)
            try:
                count = self.tally.count
                if count != reported:
                    await awaited(self.redis.hset(TALLY_KEY, self.pid, self.tally.summary()))
                    reported = count
                token = await self.redis.get(DUMP_KEY)
                if token is not None and token != dumped:
                    await awaited(self.redis.hset(ENDS_KEY, self.pid, json.dumps(self.tally.ends)))
                    dumped = token
            except RedisError:
                continue  # the parent flushes or restarts nothing while workers run; try again next tick


async def run_job(kind: str, sent: float) -> float:
    """Run one job: tally it, run its body; return the wall-clock time it started."""
    started = time.time()
    side = WorkerSide.get()
    side.tally.start(started)
    await body(kind, sent, started, side.redis)
    side.tally.end()
    return started
