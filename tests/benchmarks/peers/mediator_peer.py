"""arq-mediator: its defaults, which are also its fastest settings (there is nothing to turn off)."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack

from arq_mediator import Context, Mediator, Request

from .system import Variant, Waiter
from .workload import CONCURRENCY, run_job

QUEUE = "peers"
PRELOAD_BATCH = 1000


class WorkRequest(Request[float]):
    """The benchmark's job: run body *kind*, enqueued at *sent*; return the time it started."""

    message_name = "peers.work"
    kind: str
    sent: float


def build(url: str) -> Mediator:
    """Return a mediator on Redis *url* with the benchmark's handler on queue `QUEUE`."""
    mediator = Mediator(redis=url)

    @mediator.handler(queue=QUEUE)
    async def work(request: WorkRequest, ctx: Context) -> float:
        return await run_job(request.kind, request.sent)

    return mediator


class MediatorClient:
    """Enqueue with `Mediator.enqueue` (`enqueue_many` to fill a queue), await with `JobHandle.result`."""

    def __init__(self, url: str) -> None:
        self.mediator = build(url)
        self.stack = AsyncExitStack()

    async def open(self) -> None:
        """Connect."""
        await self.stack.enter_async_context(self.mediator)

    async def enqueue(self, kind: str, sent: float) -> Waiter:
        """Enqueue one job; return how to await its result."""
        handle = await self.mediator.enqueue(WorkRequest(kind=kind, sent=sent))

        async def wait(timeout: float) -> float:
            return await handle.result(timeout=timeout)

        return wait

    async def preload(self, kind: str, count: int) -> None:
        """Enqueue *count* jobs in batches of `PRELOAD_BATCH` with `enqueue_many`."""
        for offset in range(0, count, PRELOAD_BATCH):
            size = min(PRELOAD_BATCH, count - offset)
            await self.mediator.enqueue_many([WorkRequest(kind=kind, sent=0.0) for _ in range(size)])

    async def after_flush(self) -> None:
        """Nothing: the engine creates its keys as it goes."""

    async def close(self) -> None:
        """Disconnect."""
        await self.stack.aclose()


VARIANTS = [
    Variant(
        name="arq-mediator",
        system="arq-mediator",
        fast=False,
        settings="defaults (its CLI, INFO logging, which logs no line per job)",
        command=[
            sys.executable,
            "-m",
            "arq_mediator",
            "worker",
            "tests.benchmarks.peers.mediator_worker:mediator",
            "--queues",
            QUEUE,
            "--max-jobs",
            str(CONCURRENCY),
        ],
        client=MediatorClient,
    ),
]
