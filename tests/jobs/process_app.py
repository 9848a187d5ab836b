"""An app for worker subprocesses: handlers on five queues that record in Redis what they ran, where and when.

A worker process loads it with ``python -m arq_mediator worker tests.jobs.process_app:mediator ...`` and
reads the Redis URL from the ``ARQM_TEST_REDIS_URL`` environment variable. The test process builds its own
mediator with the same handlers through `build`, to enqueue the request types defined here.

What every run leaves in Redis (the keys are built by the functions below):

* ``test:runs:<job id>``: how many times a handler started for the job;
* ``test:starts:<worker>``: a list of ``<queue>:<job id>``, in the order the handlers' writes arrived;
* ``test:seq:<worker>``: a hash job id -> the order in which the worker process started its handlers,
  counted before the handler's first await, so it is exactly the order the worker claimed them in;
* ``test:live:<worker>`` and ``test:peak:<worker>``: handlers running in the worker now, and the most ever;
* ``test:ran_by``, ``test:started_at`` and ``test:try``: hashes job id -> worker name, start time
  (``time.time()``) and ``ctx.job.try_number``;
* ``test:started:<job id>``: set by `Block` when it starts, to the worker's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from typing import ClassVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arq_mediator import Backoff, Context, JobInfo, Mediator, Request
from arq_mediator._connection import Timeouts, open_client
from arq_mediator._prefetch import Prefetch

URL_ENV = "ARQM_TEST_REDIS_URL"
# When set, the worker's prefetch buffer holds this many jobs (at most its limit) whatever its pace.
FIXED_PREFETCH_ENV = "ARQM_TEST_FIXED_PREFETCH"
RAN_BY = "test:ran_by"
STARTED_AT = "test:started_at"
TRIES = "test:try"


def runs_key(job_id: str) -> str:
    """Return the counter of handler starts for *job_id*."""
    return f"test:runs:{job_id}"


def starts_key(worker: str) -> str:
    """Return the list of ``<queue>:<job id>`` started by *worker*."""
    return f"test:starts:{worker}"


def seq_key(worker: str) -> str:
    """Return the hash job id -> start order in *worker*."""
    return f"test:seq:{worker}"


def live_key(worker: str) -> str:
    """Return the counter of handlers running in *worker* now."""
    return f"test:live:{worker}"


def peak_key(worker: str) -> str:
    """Return the most handlers that ever ran at once in *worker*."""
    return f"test:peak:{worker}"


def started_key(job_id: str) -> str:
    """Return the key `Block` sets, to its worker's name, when it starts."""
    return f"test:started:{job_id}"


def gate_key(gate: str) -> str:
    """Return the key whose existence lets `Block` jobs waiting on *gate* finish."""
    return f"test:gate:{gate}"


class Work(Request[str]):
    """Sleep *duration* seconds; answer ``<tag>@<worker>``. Each subclass is handled on its queue."""

    message_name: ClassVar[str] = "process_app.Work"
    duration: float = 0.0
    tag: str = ""


class Critical(Work):
    """Work on the ``critical`` queue."""

    message_name: ClassVar[str] = "process_app.Critical"


class Email(Work):
    """Work on the ``emails`` queue."""

    message_name: ClassVar[str] = "process_app.Email"


class Report(Work):
    """Work on the ``reports`` queue."""

    message_name: ClassVar[str] = "process_app.Report"


class Cleanup(Work):
    """Work on the ``cleanup`` queue."""

    message_name: ClassVar[str] = "process_app.Cleanup"


class Chore(Work):
    """Work on the ``default`` queue."""

    message_name: ClassVar[str] = "process_app.Chore"


class Doomed(Work):
    """Work on the ``default`` queue, then fail; it has two tries, the second soon after the first."""

    message_name: ClassVar[str] = "process_app.Doomed"


class Block(Request[str]):
    """Wait (on the ``default`` queue) until the gate's key exists, however long that takes."""

    message_name: ClassVar[str] = "process_app.Block"
    gate: str


# Peak tracking in one atomic step: raise the live count and the peak together.
_ENTER = """
local live = redis.call('INCR', KEYS[1])
if live > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], live) end
return live
"""


class Recorder:
    """The Redis client the handlers write their traces with, opened by the mediator's lifespan."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.enter = redis.register_script(_ENTER)
        self.order = itertools.count(1)

    async def started(self, job: JobInfo, seq: int) -> None:
        """Record that *job* started as the *seq*-th handler of its worker, live count and peak included."""
        now = time.time()
        await self.enter(keys=[live_key(job.worker), peak_key(job.worker)])
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(STARTED_AT, job.id, repr(now))
            pipe.incr(runs_key(job.id))
            pipe.rpush(starts_key(job.worker), f"{job.queue}:{job.id}")
            pipe.hset(seq_key(job.worker), job.id, str(seq))
            pipe.hset(RAN_BY, job.id, job.worker)
            pipe.hset(TRIES, job.id, str(job.try_number))
            await pipe.execute()

    async def finished(self, job: JobInfo) -> None:
        """Lower the live count; through a Redis outage it is skipped rather than failing the job."""
        with contextlib.suppress(RedisError, OSError):
            await self.redis.decr(live_key(job.worker))


def _job_of(ctx: Context) -> JobInfo:
    assert ctx.job is not None, "these handlers run in workers only"
    return ctx.job


async def _work(request: Work, ctx: Context) -> str:
    recorder = ctx.resource(Recorder)
    seq = next(recorder.order)  # before any await: the order the worker started its handlers in
    job = _job_of(ctx)
    await recorder.started(job, seq)
    try:
        await asyncio.sleep(request.duration)
    finally:
        await recorder.finished(job)
    return f"{request.tag}@{job.worker}"


async def handle_critical(request: Critical, ctx: Context) -> str:
    """Run a `Critical` job."""
    return await _work(request, ctx)


async def handle_email(request: Email, ctx: Context) -> str:
    """Run an `Email` job."""
    return await _work(request, ctx)


async def handle_report(request: Report, ctx: Context) -> str:
    """Run a `Report` job."""
    return await _work(request, ctx)


async def handle_cleanup(request: Cleanup, ctx: Context) -> str:
    """Run a `Cleanup` job."""
    return await _work(request, ctx)


async def handle_chore(request: Chore, ctx: Context) -> str:
    """Run a `Chore` job."""
    return await _work(request, ctx)


async def handle_doomed(request: Doomed, ctx: Context) -> str:
    """Run a `Doomed` job, then fail it."""
    await _work(request, ctx)
    raise RuntimeError(f"doomed try {_job_of(ctx).try_number}")


async def handle_block(request: Block, ctx: Context) -> str:
    """Mark the start, then wait for the gate's key (polling, so cancellation is prompt); count the run."""
    recorder = ctx.resource(Recorder)
    seq = next(recorder.order)
    job = _job_of(ctx)
    await recorder.started(job, seq)
    try:
        await recorder.redis.set(started_key(job.id), job.worker)
        # Another process opens the gate: no asyncio.Event reaches across, so poll the key.
        while not await recorder.redis.exists(gate_key(request.gate)):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    finally:
        await recorder.finished(job)
    return f"{request.gate}@{job.worker}"


def build(url: str | None) -> Mediator:
    """Return a mediator on *url* with every handler of this module registered and the `Recorder` lifespan."""
    mediator = Mediator(redis=url)
    mediator.handler(queue="critical")(handle_critical)
    mediator.handler(queue="emails")(handle_email)
    mediator.handler(queue="reports")(handle_report)
    mediator.handler(queue="cleanup")(handle_cleanup)
    mediator.handler(queue="default")(handle_chore)
    mediator.handler(queue="default", timeout=None)(handle_block)
    soon = Backoff(initial=0.05, jitter=0.0)
    mediator.handler(queue="default", max_tries=2, backoff=soon)(handle_doomed)

    @mediator.lifespan
    async def recorder(mediator: Mediator) -> AsyncIterator[None]:
        if url is None:
            yield
            return
        client = open_client(url, Timeouts())  # a Sentinel URL too
        mediator.provide(Recorder(client))
        try:
            yield
        finally:
            await client.aclose()

    return mediator


def fix_prefetch(size: int) -> None:
    """Make every worker of this process keep *size* jobs in its prefetch buffer (at most its limit)."""

    def target(self: Prefetch, now: float) -> int:
        return min(size, self.limit)

    Prefetch.target = target  # type: ignore[method-assign]


# What the worker processes load. Importing this module elsewhere (the test process) needs no Redis.
mediator = build(os.environ.get(URL_ENV))
if os.environ.get(FIXED_PREFETCH_ENV):
    fix_prefetch(int(os.environ[FIXED_PREFETCH_ENV]))
