"""What the two dashboard benchmarks share: a history filled by a real worker, their options and their table.

`filled_history` runs real jobs through a real worker on a private redis-server (by default 100,000
succeeded and 10,000 failed over 50 queues and 5 request types, 1,000 more waiting, one recurring job),
then yields the store the dashboard reads. `Timings` prints each measured row as p50, p95 and max and
says whether the worst p95 meets the target.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from arq_mediator import Mediator, Request, Worker, WorkerSettings  # noqa: E402
from arq_mediator.dashboard import RedisDashboardSource, StateCounts  # noqa: E402
from tests.benchmarks.private_redis import private_redis_server  # noqa: E402

TARGET_MS = 100.0
TYPES = 5


class Work(Request[int]):
    """A job that succeeds, or fails when asked to."""

    n: int
    fail: bool = False


def request_types() -> list[type[Work]]:
    """Return `TYPES` distinct request types (one handler each), so type filters have something to do."""
    kinds: list[type[Work]] = [Work]
    for index in range(1, TYPES):
        kinds.append(type(f"Work{index}", (Work,), {"__module__": __name__}))
    return kinds


def work_for(kind: type[Work]) -> Callable[..., Awaitable[int]]:
    """Return a handler of *kind* (each request type needs its own): n, or a failure when asked."""

    async def handle(request: Work) -> int:
        if request.fail:
            raise ValueError("failed on purpose")
        return request.n

    handle.__annotations__ = {"request": kind, "return": int}
    return handle


async def fill(
    mediator: Mediator, kinds: list[type[Work]], queues: list[str], succeeded: int, failed: int
) -> float:
    """Run *succeeded* and *failed* jobs, in batches spread over *queues* and *kinds*; return seconds."""
    began = time.perf_counter()
    worker = Worker(mediator, WorkerSettings(queues=queues, max_jobs=200, idle_check=0.05, heartbeat=1.0))
    running = asyncio.create_task(worker.run())
    total = succeeded + failed
    every = total // failed if failed else 0  # every so many jobs, one fails
    for batch, start in enumerate(range(0, total, 1000)):
        requests = [
            kinds[index % len(kinds)](n=index, fail=bool(every) and index % every == 0)
            for index in range(start, min(start + 1000, total))
        ]
        await mediator.enqueue_many(requests, queue=queues[batch % len(queues)])
        while worker.counters.succeeded + worker.counters.failed < start - 5000:  # noqa: ASYNC110 - counters
            await asyncio.sleep(0.05)
    while worker.counters.succeeded + worker.counters.failed < total:  # noqa: ASYNC110 - counters
        await asyncio.sleep(0.05)
    worker.stop()
    await running
    return time.perf_counter() - began


@dataclass(frozen=True, slots=True)
class History:
    """A filled history: its mediator (open), the store over it, and what it was filled with."""

    mediator: Mediator
    store: RedisDashboardSource
    kinds: list[type[Work]]
    queues: list[str]
    counts: StateCounts


@asynccontextmanager
async def filled_history(url: str, options: argparse.Namespace) -> AsyncIterator[History]:
    """Fill the Redis at *url* as *options* say (see `parse`), print what it holds, and yield it."""
    mediator = Mediator(redis=url)
    kinds = request_types()
    for kind in kinds:
        mediator.handler(work_for(kind))
    queues = [f"queue-{index:02d}" for index in range(options.queues)]
    mediator.recurring(Work(n=0), cron="0 0 1 1 *", name="yearly")
    async with mediator:
        seconds = await fill(mediator, kinds, queues, options.succeeded, options.failed)
        for start in range(0, options.waiting, 1000):  # and some waiting, for the enqueued list
            batch = [Work(n=n) for n in range(start, min(start + 1000, options.waiting))]
            await mediator.enqueue_many(batch, queue=queues[0])
        store = RedisDashboardSource(mediator)
        counts = await store.counts()
        print(
            f"filled in {seconds:.0f} s: {counts.succeeded:,} succeeded, {counts.failed:,} failed, "
            f"{counts.enqueued:,} enqueued, over {len(queues)} queues and {len(kinds)} request types"
        )
        yield History(mediator, store, kinds, queues, counts)


class Timings:
    """The table a benchmark prints: one row of p50, p95 and max per thing measured, and the verdict."""

    def __init__(self, heading: str) -> None:
        self.worst = 0.0
        print(f"\n{heading:40} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  (target p95 < {TARGET_MS:.0f} ms)")

    def row(self, name: str, milliseconds: list[float]) -> None:
        """Print *name*'s p50, p95 and max of *milliseconds*, flagged when its p95 misses the target."""
        times = sorted(milliseconds)
        p95 = times[max(int(len(times) * 0.95) - 1, 0)]
        self.worst = max(self.worst, p95)
        flag = "" if p95 < TARGET_MS else "  OVER"
        print(f"{name:40} {statistics.median(times):8.2f} {p95:8.2f} {times[-1]:8.2f}{flag}")

    def verdict(self) -> None:
        """Print the worst p95 and whether it meets the target."""
        met = "meets" if self.worst < TARGET_MS else "MISSES"
        print(f"\nworst p95 {self.worst:.2f} ms: {met} the target")


async def timed(call: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    """Return the milliseconds each of *repeat* calls took (after one warm-up call)."""
    await call()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await call()
        times.append((time.perf_counter() - began) * 1000)
    return times


def run(description: str, measure: Callable[[str, argparse.Namespace], Coroutine[None, None, None]]) -> None:
    """Read the common options, start a private redis-server, run *measure* on it, stop it."""
    # The failing jobs fail on purpose and the queues are spread on purpose: no log line per job.
    logging.getLogger("arq_mediator").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--succeeded", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=1_000)
    parser.add_argument("--queues", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=50)
    options = parser.parse_args()
    with private_redis_server() as url:
        asyncio.run(measure(url, options))
