"""The worker: takes jobs from an ordered set of queues under one concurrency cap and runs their handlers.

It replaces arq's `Worker` loop (one queue, polling, long in-progress keys) and keeps arq's data layout.
The loop claims as many jobs as it has free slots in one script call, highest-priority queue first;
idle, it sleeps until a wake-up message, the next deferred job, or a slow fallback tick. Each running job
holds a short lease that the heartbeat renews, so a dead worker's jobs come back within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from pydantic import TypeAdapter
from redis.exceptions import RedisError

from ._execution import REDIS_DOWN, Counters, JobRunner
from ._jobs import now_ms
from ._keys import worker_key
from ._recurring import run_schedules
from ._telemetry import queue_depths

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from ._mediator import Mediator

logger = logging.getLogger("arq_mediator.worker")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How one worker process runs: its queues in priority order and its concurrency cap.

    Attributes:
        queues: Queues to take jobs from, the first highest in priority.
        max_jobs: Jobs running at once, at most, across all its queues.
        name: A readable name for logs and stats; host and pid by default.
        lease: Seconds a job stays claimed without a heartbeat; a crashed worker's jobs return after this.
        heartbeat: Seconds between heartbeats (which renew leases and the worker's registry entry).
        idle_check: Seconds between claims when no wake-up arrives (picks up jobs whose lease expired).
        grace: Seconds running jobs get to finish after a stop request before they are given back.
        max_lost: Times a job may lose its worker before it is failed as poison.
    """

    queues: Sequence[str]
    max_jobs: int = 10
    name: str | None = None
    lease: float = 10.0
    heartbeat: float = 2.0
    idle_check: float = 1.0
    grace: float = 25.0
    max_lost: int = 5

    def __post_init__(self) -> None:
        if not self.queues or any(not queue for queue in self.queues):
            raise ValueError("a worker needs one or more non-empty queue names")
        if len(set(self.queues)) != len(self.queues):
            raise ValueError(f"a worker's queues must be distinct, got {list(self.queues)}")
        if self.max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {self.max_jobs}")
        if not 0 < self.heartbeat < self.lease:
            raise ValueError(
                f"heartbeat ({self.heartbeat}s) must be positive and shorter than the lease ({self.lease}s)"
            )


class Worker(JobRunner):
    """Run background jobs of a mediator from an ordered set of queues; see `WorkerSettings`.

    The constructor only records configuration; `run` connects, works until `stop`, then drains.
    """

    def __init__(self, mediator: Mediator, settings: WorkerSettings) -> None:
        self.mediator = mediator
        self.settings = settings
        self.instance = uuid.uuid4().hex[:12]
        self.name = settings.name or f"{socket.gethostname()}-{os.getpid()}"
        self.counters = Counters()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._aborting: set[str] = set()
        self._attention = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped_at: int | None = None
        self._adapters: dict[type, TypeAdapter[Any]] = {}
        self._to_record: list[tuple[list[Any], asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        """Return how many jobs run now."""
        return len(self._running)

    def stop(self) -> None:
        """Stop taking jobs; `run` then lets running jobs finish within the grace period and returns."""
        if self._stopped_at is None:
            self._stopped_at = now_ms()
        self._stopping.set()
        self._attention.set()

    async def run(self) -> None:
        """Work until `stop` is called, then drain: finish or give back every running job."""
        # Jobs and schedule ticks start their own traces from their envelopes: whatever span the caller
        # of run() is in must not become their parent, nor be marked by their failures.
        detached = otel_context.attach(otel_context.Context())
        try:
            await self._work()
        finally:
            otel_context.detach(detached)

    async def _work(self) -> None:
        jobs = self.mediator.jobs
        pubsub = jobs.redis.pubsub(ignore_subscribe_messages=True)
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"{self.name} heartbeat")
        helpers: list[asyncio.Task[None]] = [heartbeat]
        try:
            channels = jobs.channels
            await pubsub.subscribe(*(channels.wake(q) for q in self.settings.queues), channels.abort)
            helpers.append(asyncio.create_task(self._listen(pubsub), name=f"{self.name} listener"))
            if self.mediator.recurring_jobs:
                helpers.append(asyncio.create_task(run_schedules(self.mediator, self._stopping)))
            logger.info(
                "worker %s started: queues %s, max %d jobs",
                self.name,
                ", ".join(self.settings.queues),
                self.settings.max_jobs,
            )
            await self._claim_loop()
        finally:
            await self._drain(heartbeat)
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            with contextlib.suppress(RedisError, OSError):
                await jobs.redis.delete(worker_key(self.instance))
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            logger.info("worker %s stopped: %s", self.name, self._describe_counts())

    def _describe_counts(self) -> str:
        counts = self.counters
        return f"{counts.succeeded} succeeded, {counts.failed} failed, {counts.retried} retried"

    async def _claim_loop(self) -> None:
        claim = self.mediator.jobs.scripts.claim
        lease_ms = int(self.settings.lease * 1000)
        backoff = 0.1
        while not self._stopping.is_set():
            free = self.settings.max_jobs - len(self._running)
            if free <= 0:
                self._attention.clear()
                if self.settings.max_jobs - len(self._running) <= 0:
                    await self._attention.wait()
                continue
            # Cleared before the claim, so a wake-up arriving during the round trip is not lost.
            self._attention.clear()
            try:
                queues = self.settings.queues
                arguments: list[str | int] = [
                    now_ms(),
                    free,
                    lease_ms,
                    self.instance,
                    len(queues),
                    *queues,
                    *self._running,
                ]
                reply = await claim(args=arguments)
            except REDIS_DOWN as error:
                logger.warning(
                    "worker %s cannot reach Redis (%s); retrying in %.1fs", self.name, error, backoff
                )
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            next_due = int(reply[0])
            for index in range(1, len(reply), 4):
                job_id = reply[index].decode()
                job = self._run_job(
                    job_id, reply[index + 1].decode(), int(reply[index + 2]), reply[index + 3]
                )
                task = asyncio.create_task(job)
                self._running[job_id] = task
                task.add_done_callback(partial(self._finished, job_id))
            if (len(reply) - 1) // 4 < free:
                wait = self.settings.idle_check
                if next_due >= 0:
                    wait = min(wait, max(next_due - now_ms(), 0) / 1000)
                await self._pause(wait)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._attention.wait()

    def _finished(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._running.get(job_id) is task:
            del self._running[job_id]
        self._aborting.discard(job_id)
        self._attention.set()

    async def _drain(self, heartbeat: asyncio.Task[None]) -> None:
        if self._running:
            logger.info(
                "worker %s draining %d running job(s), up to %.1fs",
                self.name,
                len(self._running),
                self.settings.grace,
            )
            await asyncio.wait(list(self._running.values()), timeout=self.settings.grace)
        # No renewal may be in flight while jobs are given back, or it could re-take a returned job's lease.
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        remaining = list(self._running.values())
        for task in remaining:
            task.cancel()
        if remaining:
            logger.warning(
                "worker %s gave %d unfinished job(s) back to their queues", self.name, len(remaining)
            )
            await asyncio.gather(*remaining, return_exceptions=True)
        if self._recorder is not None:  # outcomes still on their way must arrive before the pool closes
            await asyncio.gather(self._recorder, return_exceptions=True)

    def _abort(self, job_id: str) -> None:
        task = self._running.get(job_id)
        if task is not None and job_id not in self._aborting:
            self._aborting.add(job_id)
            task.cancel()

    async def _listen(self, pubsub: PubSub) -> None:
        channels = self.mediator.jobs.channels
        delay = 0.1
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except REDIS_DOWN as error:
                logger.warning(
                    "worker %s lost its wake-up channel (%s); reconnecting in %.1fs", self.name, error, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._attention.set()  # wake-ups may have been missed meanwhile
                continue
            delay = 0.1
            if message is None or message["type"] != "message":
                continue
            channel = message["channel"].decode()
            if channel == channels.abort:
                self._abort(message["data"].decode())
            elif channel.startswith(channels.wake_prefix):
                self._attention.set()

    def _record(self) -> str:
        counts = self.counters
        return json.dumps(
            {
                "name": self.name,
                "instance": self.instance,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(self.settings.queues),
                "max_jobs": self.settings.max_jobs,
                "running": len(self._running),
                "succeeded": counts.succeeded,
                "failed": counts.failed,
                "retried": counts.retried,
                "started_at": counts.started_at,
                "last_seen": now_ms(),
            }
        )

    async def _heartbeat_loop(self) -> None:
        heartbeat = self.mediator.jobs.scripts.heartbeat
        ttl_ms = int(self.settings.heartbeat * 3000)
        lease_ms = int(self.settings.lease * 1000)
        while True:
            try:
                queues = self.settings.queues
                reply = await heartbeat(
                    args=[
                        worker_key(self.instance),
                        self._record(),
                        ttl_ms,
                        lease_ms,
                        self.instance,
                        now_ms(),
                        len(queues),
                        *queues,
                        *self._running,
                    ]
                )
                # Feeds the queue-depth gauge, read whenever metrics are collected.
                queue_depths.update(zip(queues, (int(depth) for depth in reply[: len(queues)]), strict=True))
                for job_id in reply[len(queues) :]:
                    self._abort(job_id.decode())
            except REDIS_DOWN as error:
                logger.warning("worker %s missed a heartbeat (%s)", self.name, error)
            await asyncio.sleep(self.settings.heartbeat)


async def run_worker(mediator: Mediator, settings: WorkerSettings, *, handle_signals: bool = True) -> Worker:
    """Open *mediator*, run a worker with *settings* until SIGTERM or SIGINT (or `Worker.stop`), then drain.

    The signal handlers stay in place until the mediator has closed, so a second signal during the
    drain asks for the same stop instead of killing the process half-way.

    Returns:
        The stopped worker, with its counters.
    """
    worker = Worker(mediator, settings)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for signum in signals:
        loop.add_signal_handler(signum, worker.stop)
    try:
        async with mediator:
            await worker.run()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return worker
