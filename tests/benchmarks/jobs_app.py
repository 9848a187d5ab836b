"""What the worker processes of `bench_jobs.py` import: equivalent no-op jobs for raw arq and arq-mediator.

Both sides get the same two jobs:

* a no-op (``noop`` / ``NoopRequest``) that, when ``BENCH_EXPECT`` is set in the worker's environment,
  counts the jobs it ran in memory and, on the last one, pushes the first job's start time, the last
  job's end time and the worker's CPU time in between to ``bench:drained`` (one Redis call per drain, so
  the no-op stays a no-op);
* a stamp (``stamp`` / ``StampRequest``) that pushes its start time to ``bench:starts`` and returns the
  time it ends, for the enqueue -> start and finish -> result latencies.

Everything lives in database ``ARQM_BENCH_REDIS_DB`` (default 14) of ``REDIS_URL`` (default
redis://127.0.0.1:6379); database 0 is refused.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit, urlunsplit

from arq.connections import RedisSettings
from arq.worker import run_worker
from redis.asyncio import Redis

from arq_mediator import Context, JobHistory, Mediator, Request

BENCH_DB = int(os.environ.get("ARQM_BENCH_REDIS_DB", "14"))
if BENCH_DB == 0:
    raise SystemExit("the job benchmark flushes its database: point ARQM_BENCH_REDIS_DB at one other than 0")


def redis_url(db: int = BENCH_DB) -> str:
    """Return REDIS_URL (default redis://127.0.0.1:6379) pointed at database *db*."""
    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


REDIS_URL = redis_url()
REDIS_SETTINGS = RedisSettings.from_dsn(REDIS_URL)
ARQ_QUEUE = "arq:queue"  # arq's default queue, which its users get
MEDIATOR_QUEUE = "bench"
MEDIATOR_QUEUE_KEY = "arq:queue:" + MEDIATOR_QUEUE  # arq-mediator keeps arq's key layout (_keys.QUEUE_PREFIX)
# Where its running jobs are meanwhile (_keys.RUNNING_PREFIX): a claimed job leaves its queue.
MEDIATOR_RUNNING_KEY = "arqm:running:" + MEDIATOR_QUEUE
STARTS_KEY = "bench:starts"
DRAINED_KEY = "bench:drained"
# How many no-op jobs this worker process is to run before it reports the drain; 0: never report.
EXPECT = int(os.environ.get("BENCH_EXPECT", "0"))
MAX_JOBS = 20


class _Tally:
    """The drain's bookkeeping, in memory: first start (wall clock and this process's CPU), jobs run."""

    first_start = 0.0
    first_cpu = 0.0
    count = 0


def _tally() -> str | None:
    """Count one no-op job; on the EXPECT-th, return the report to push.

    The report holds the first job's start, the last job's end, the count, and the CPU seconds this worker
    process used in between.
    """
    now = time.time()
    if _Tally.count == 0:
        _Tally.first_start = now
        _Tally.first_cpu = time.process_time()
    _Tally.count += 1
    if _Tally.count != EXPECT:
        return None
    cpu = time.process_time() - _Tally.first_cpu
    return json.dumps({"first_start": _Tally.first_start, "last_end": now, "count": _Tally.count, "cpu": cpu})


async def _push(redis: Redis, key: str, value: str) -> None:
    # redis-py types RPUSH as sync-or-async; on the asyncio client it is always awaitable.
    await cast("Awaitable[int]", redis.rpush(key, value))


async def _stamp_start(redis: Redis, tag: str) -> None:
    await _push(redis, STARTS_KEY, f"{tag} {time.time()!r}")


# Raw arq ------------------------------------------------------------------------------------------------


async def noop(ctx: dict[str, Any]) -> None:
    """Do nothing (but count toward the drain when the parent asked for it)."""
    if EXPECT and (report := _tally()) is not None:
        await _push(ctx["redis"], DRAINED_KEY, report)


async def stamp(ctx: dict[str, Any], tag: str) -> float:
    """Record the start time under *tag*; return the end time."""
    await _stamp_start(ctx["redis"], tag)
    return time.time()


# arq reads only a settings class's own __dict__, so each class spells out all its settings.
class ArqSettings:
    """Raw arq as users get it: default poll_delay (0.5 s), pickle, keep_result 1 h."""

    functions: ClassVar[list[Any]] = [noop, stamp]
    redis_settings = REDIS_SETTINGS
    max_jobs = MAX_JOBS


class ArqFastSettings:
    """Raw arq polling at 10 ms, about its fastest."""

    functions: ClassVar[list[Any]] = [noop, stamp]
    redis_settings = REDIS_SETTINGS
    max_jobs = MAX_JOBS
    poll_delay = 0.01


class ArqDrainSettings:
    """Raw arq for draining a pre-filled queue: 10 ms polls, exits when the queue is empty."""

    functions: ClassVar[list[Any]] = [noop, stamp]
    redis_settings = REDIS_SETTINGS
    max_jobs = MAX_JOBS
    poll_delay = 0.01
    burst = True


def run_arq_quiet(settings_name: str) -> None:
    """Run raw arq's worker with *settings_name* from here, logging warnings only (no per-job lines)."""
    logging.basicConfig(level=logging.WARNING)
    run_worker(globals()[settings_name])


# arq-mediator -------------------------------------------------------------------------------------------

# BENCH_HISTORY=off in a worker's environment turns the job history off, for the drain with and without it.
HISTORY = os.environ.get("BENCH_HISTORY", "on") != "off"
mediator = Mediator(redis=REDIS_URL, history=JobHistory() if HISTORY else None)
# What the parent preloads the history-off drain with: nothing recorded at enqueue either.
mediator_without_history = Mediator(redis=REDIS_URL, history=None)


class NoopRequest(Request[None]):
    """Do nothing."""

    # Fixed wire names: the parent may import this module under another name than the workers do.
    message_name = "bench.noop"


class StampRequest(Request[float]):
    """Record the start time under *tag*; return the end time."""

    message_name = "bench.stamp"
    tag: str


@mediator.handler(queue=MEDIATOR_QUEUE)
async def handle_noop(request: NoopRequest, ctx: Context) -> None:
    """Do nothing (but count toward the drain when the parent asked for it)."""
    if EXPECT and (report := _tally()) is not None:
        await _push(ctx.mediator._jobs.redis, DRAINED_KEY, report)


mediator_without_history.handler(queue=MEDIATOR_QUEUE)(handle_noop)


@mediator.handler(queue=MEDIATOR_QUEUE)
async def handle_stamp(request: StampRequest, ctx: Context) -> float:
    """Record the start time under the request's tag; return the end time."""
    await _stamp_start(ctx.mediator._jobs.redis, request.tag)
    return time.time()
