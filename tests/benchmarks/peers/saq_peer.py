"""saq: its defaults, which log nothing per job (its CLI logs errors only) and are its fastest."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from saq import Job, Queue
from saq.job import TERMINAL_STATUSES, Status

from .system import Variant, Waiter, concurrently
from .workload import CONCURRENCY, run_job

QUEUE = "peers"
RECHECK = 0.5  # seconds a result wait listens before reading the job again


async def work(ctx: Any, *, kind: str, sent: float) -> float:
    """Run the benchmark's job."""
    return await run_job(kind, sent)


def queue(url: str) -> Queue:
    """Return saq's Redis queue `QUEUE` on *url*."""
    return Queue.from_url(url, name=QUEUE)


def settings(url: str) -> dict[str, Any]:
    """Return the worker settings saq's CLI reads: the queue, the function, concurrency."""
    return {"queue": queue(url), "functions": [work], "concurrency": CONCURRENCY}


class SaqClient:
    """Enqueue with `Queue.enqueue`, await with `Job.refresh(until_complete=...)`, re-read every 0.5 s."""

    def __init__(self, url: str) -> None:
        self.queue = queue(url)

    async def open(self) -> None:
        """Connect."""
        await self.queue.connect()

    async def _enqueue(self, kind: str, sent: float) -> Job:
        job = await self.queue.enqueue("work", kind=kind, sent=sent)
        if job is None:
            raise RuntimeError("saq refused a job (a job key collision cannot happen here)")
        return job

    async def enqueue(self, kind: str, sent: float) -> Waiter:
        """Enqueue one job; return how to await its result."""
        job = await self._enqueue(kind, sent)

        async def wait(timeout: float) -> float:
            deadline = time.monotonic() + timeout
            while True:
                # refresh() reads the job, then listens for its completion: one that lands in between
                # is not heard, so the listen is bounded and the job read again (saq's apply() polls
                # at this interval too).
                with contextlib.suppress(TimeoutError):
                    await job.refresh(until_complete=RECHECK)
                if job.status == Status.COMPLETE:
                    return float(job.result)
                if job.status in TERMINAL_STATUSES:
                    raise RuntimeError(f"saq job {job.key} ended {job.status}: {job.error}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"saq job {job.key} not complete within {timeout} s ({job.status})")

        return wait

    async def preload(self, kind: str, count: int) -> None:
        """Enqueue *count* jobs, several in flight."""
        await concurrently(lambda: self._enqueue(kind, 0.0), count)

    async def after_flush(self) -> None:
        """Nothing: saq creates its keys as it goes."""

    async def close(self) -> None:
        """Disconnect."""
        await self.queue.disconnect()


VARIANTS = [
    Variant(
        name="saq",
        system="saq",
        fast=False,
        settings="defaults (its CLI logs errors only, so no line per job; JSON); results by pub/sub",
        command=[sys.executable, "-m", "saq", "tests.benchmarks.peers.saq_worker.settings"],
        client=SaqClient,
    ),
]
