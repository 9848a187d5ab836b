"""streaq: defaults (its CLI logs two lines per job at INFO) and the same worker logging warnings only."""

from __future__ import annotations

import math
import sys
from contextlib import AsyncExitStack
from typing import Any

from streaq import Worker

from .system import Variant, Waiter, python_command
from .workload import CONCURRENCY, run_job

QUEUE = "peers"
TASK = "peers.work"
PRELOAD_BATCH = 1000


async def work(kind: str, sent: float) -> float:
    """Run the benchmark's job."""
    return await run_job(kind, sent)


def worker(url: str) -> tuple[Worker[Any], Any]:
    """Return a streaq worker on Redis *url* (queue `QUEUE`, concurrency 20) and its registered task."""
    made: Worker[Any] = Worker(redis_url=url, concurrency=CONCURRENCY, queue_name=QUEUE)
    return made, made.task(name=TASK)(work)


class StreaqClient:
    """Enqueue with `task.enqueue()` (`Worker.enqueue_many` to fill a queue), await with `Task.result`."""

    def __init__(self, url: str) -> None:
        self.worker, self.task = worker(url)
        self.stack = AsyncExitStack()

    async def open(self) -> None:
        """Connect."""
        await self.stack.enter_async_context(self.worker)

    async def enqueue(self, kind: str, sent: float) -> Waiter:
        """Enqueue one job; return how to await its result."""
        task = await self.task.enqueue(kind, sent)

        async def wait(timeout: float) -> float:
            result = await task.result(timeout=math.ceil(timeout))
            return float(result.result)

        return wait

    async def preload(self, kind: str, count: int) -> None:
        """Enqueue *count* jobs in pipelines of `PRELOAD_BATCH` with `Worker.enqueue_many`."""
        for offset in range(0, count, PRELOAD_BATCH):
            size = min(PRELOAD_BATCH, count - offset)
            await self.worker.enqueue_many([self.task.enqueue(kind, 0.0) for _ in range(size)])

    async def after_flush(self) -> None:
        """Nothing: streaq's Lua library survives a flush, and it creates its keys as it goes."""

    async def close(self) -> None:
        """Disconnect."""
        await self.stack.aclose()


_WORKER = "tests.benchmarks.peers.streaq_worker"
VARIANTS = [
    Variant(
        name="streaq",
        system="streaq",
        fast=False,
        settings="defaults (its CLI: INFO, two log lines per job; pickle)",
        command=[sys.executable, "-m", "streaq", "run", f"{_WORKER}:worker"],
        client=StreaqClient,
    ),
    Variant(
        name="streaq-quiet",
        system="streaq",
        fast=True,
        settings="logging warnings only (no per-job lines)",
        command=python_command(f"from {_WORKER} import run_quiet; run_quiet()"),
        client=StreaqClient,
    ),
]
