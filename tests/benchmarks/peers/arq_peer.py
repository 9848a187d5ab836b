"""arq: defaults (0.5 s polls, pickle, a log line per job) and its fastest documented settings."""

from __future__ import annotations

import sys
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.jobs import Job

from .system import Variant, Waiter, concurrently, python_command
from .workload import CONCURRENCY, run_job

FAST_POLL = 0.01  # arq's poll_delay and Job.result's poll_delay, the lowest its docs suggest as sane


async def work(ctx: dict[str, Any], kind: str, sent: float) -> float:
    """Run the benchmark's job."""
    return await run_job(kind, sent)


def settings(url: str, fast: bool) -> type:
    """Return an arq worker settings class for Redis *url*: arq's defaults, or 10 ms polls.

    arq reads a settings class's own ``__dict__``, so the class is built from exactly the settings given.
    """
    values: dict[str, Any] = {
        "functions": [work],
        "redis_settings": RedisSettings.from_dsn(url),
        "max_jobs": CONCURRENCY,
    }
    if fast:
        values["poll_delay"] = FAST_POLL
    return type("Settings", (), values)


class ArqClient:
    """Enqueue with `ArqRedis.enqueue_job`, await with `Job.result` (polling at the variant's delay)."""

    def __init__(self, url: str, fast: bool) -> None:
        self.url = url
        self.result_poll = FAST_POLL if fast else 0.5
        self.pool: ArqRedis | None = None

    def _pool(self) -> ArqRedis:
        if self.pool is None:
            raise RuntimeError("open() the client first")
        return self.pool

    async def open(self) -> None:
        """Connect."""
        self.pool = await create_pool(RedisSettings.from_dsn(self.url))

    async def _enqueue(self, kind: str, sent: float) -> Job:
        job = await self._pool().enqueue_job("work", kind, sent)
        if job is None:
            raise RuntimeError("arq refused a job (a job id collision cannot happen here)")
        return job

    async def enqueue(self, kind: str, sent: float) -> Waiter:
        """Enqueue one job; return how to await its result."""
        job = await self._enqueue(kind, sent)

        async def wait(timeout: float) -> float:
            return float(await job.result(timeout=timeout, poll_delay=self.result_poll))

        return wait

    async def preload(self, kind: str, count: int) -> None:
        """Enqueue *count* jobs, several in flight (arq has no batch enqueue)."""
        await concurrently(lambda: self._enqueue(kind, 0.0), count)

    async def after_flush(self) -> None:
        """Nothing: arq creates its keys as it goes."""

    async def close(self) -> None:
        """Disconnect."""
        if self.pool is not None:
            await self.pool.aclose()


_WORKER = "tests.benchmarks.peers.arq_worker"
VARIANTS = [
    Variant(
        name="arq",
        system="arq",
        fast=False,
        settings="defaults: poll_delay 0.5 s, pickle, a log line per job, Job.result polls at 0.5 s",
        command=[sys.executable, "-m", "arq", f"{_WORKER}.Settings"],
        client=lambda url: ArqClient(url, fast=False),
        slow_polls=True,
    ),
    Variant(
        name="arq-fast",
        system="arq",
        fast=True,
        settings="poll_delay 0.01 s, logging off (warnings only), Job.result polls at 0.01 s",
        command=python_command(f"from {_WORKER} import run_quiet; run_quiet()"),
        client=lambda url: ArqClient(url, fast=True),
    ),
]
