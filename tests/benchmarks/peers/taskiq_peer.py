"""taskiq with taskiq-redis: its list broker with defaults, and its stream broker as the fast variant.

Both keep results in taskiq-redis's result backend (taskiq's default has none, and the benchmark awaits
results). The fast variant: the stream broker (acknowledged delivery, reads 100 entries per call), log
level WARNING (the default logs a line per job) and results polled every 10 ms instead of 0.2 s.
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from typing import Any

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker

from .system import Variant, Waiter, concurrently
from .workload import CONCURRENCY, run_job

QUEUE = "peers"
TASK = "peers.work"
DEFAULT_CHECK_INTERVAL = 0.2  # AsyncTaskiqTask.wait_result's default
FAST_CHECK_INTERVAL = 0.01


async def work(kind: str, sent: float) -> float:
    """Run the benchmark's job."""
    return await run_job(kind, sent)


def broker(
    url: str, fast: bool
) -> tuple[AsyncBroker, AsyncTaskiqDecoratedTask[[str, float], Coroutine[Any, Any, float]]]:
    """Return a broker on Redis *url* (stream broker when *fast*) with results kept, and its task."""
    backend: RedisAsyncResultBackend[Any] = RedisAsyncResultBackend(url)
    queue = RedisStreamBroker(url, queue_name=QUEUE) if fast else ListQueueBroker(url, queue_name=QUEUE)
    made = queue.with_result_backend(backend)
    return made, made.register_task(work, task_name=TASK)


class TaskiqClient:
    """Enqueue with `.kiq()`, await with `wait_result(check_interval=...)`."""

    def __init__(self, url: str, fast: bool) -> None:
        self.broker, self.task = broker(url, fast)
        self.check_interval = FAST_CHECK_INTERVAL if fast else DEFAULT_CHECK_INTERVAL

    async def open(self) -> None:
        """Connect (for the stream broker this creates the consumer group the workers read)."""
        await self.broker.startup()

    async def enqueue(self, kind: str, sent: float) -> Waiter:
        """Enqueue one job; return how to await its result."""
        task = await self.task.kiq(kind, sent)

        async def wait(timeout: float) -> float:
            result = await task.wait_result(check_interval=self.check_interval, timeout=timeout)
            if result.is_err:
                raise RuntimeError(f"taskiq job {task.task_id} failed: {result.error!r}")
            return float(result.return_value)

        return wait

    async def preload(self, kind: str, count: int) -> None:
        """Enqueue *count* jobs, several in flight."""
        await concurrently(lambda: self.task.kiq(kind, 0.0), count)

    async def after_flush(self) -> None:
        """Recreate the stream's consumer group the flush removed (the list broker needs nothing)."""
        await self.broker.startup()

    async def close(self) -> None:
        """Disconnect."""
        await self.broker.shutdown()


def _command(fast: bool) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "taskiq",
        "worker",
        "tests.benchmarks.peers.taskiq_worker:broker",
        "--workers",
        "1",
        "--max-async-tasks",
        str(CONCURRENCY),
    ]
    return [*command, "--log-level", "WARNING"] if fast else command


VARIANTS = [
    Variant(
        name="taskiq",
        system="taskiq",
        fast=False,
        settings="ListQueueBroker, Redis result backend, INFO log line per job, results polled at 0.2 s",
        command=_command(False),
        client=lambda url: TaskiqClient(url, fast=False),
    ),
    Variant(
        name="taskiq-stream",
        system="taskiq",
        fast=True,
        settings="RedisStreamBroker, log level WARNING, results polled at 0.01 s",
        command=_command(True),
        client=lambda url: TaskiqClient(url, fast=True),
    ),
]
