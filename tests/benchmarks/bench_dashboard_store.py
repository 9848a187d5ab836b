"""Benchmark: the dashboard store's calls at scale, on a private redis-server.

Real jobs run by a real worker fill the history: by default 100,000 succeeded and 10,000 failed jobs over
50 queues and 5 request types, with 1,000 more waiting; then each store call the pages make is timed
(p50, p95, max over the repetitions). Target: p95 under 100 ms for every call; a page's calls should be
far below, as each is a range query on an index whatever the number of jobs retained.

Run from the repository root: python tests/benchmarks/bench_dashboard_store.py [--succeeded 100000]
[--failed 10000] [--queues 50] [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from arq_mediator import Mediator, Request, Worker, WorkerSettings  # noqa: E402
from arq_mediator.dashboard._model import JobState  # noqa: E402
from arq_mediator.dashboard._store import RedisDashboardSource  # noqa: E402
from tests.benchmarks.private_redis import private_redis_server  # noqa: E402

TARGET_MS = 100.0
TYPES = 5


class Work(Request[int]):
    """A job that succeeds, or fails when asked to."""

    n: int
    fail: bool = False


async def work(request: Work) -> int:
    """Return n, or fail."""
    if request.fail:
        raise ValueError("failed on purpose")
    return request.n


def request_types() -> list[type[Work]]:
    """Return `TYPES` distinct request types (one handler each), so type filters have something to do."""
    kinds: list[type[Work]] = [Work]
    for index in range(1, TYPES):
        kinds.append(type(f"Work{index}", (Work,), {"__module__": __name__}))
    return kinds


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


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    """Return the milliseconds each of *repeat* calls took (after one warm-up call)."""
    await call()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await call()
        times.append((time.perf_counter() - began) * 1000)
    return times


async def measure(url: str, options: argparse.Namespace) -> None:
    """Fill the history, then time every store call the pages make."""
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
        some_id = (await store.jobs(JobState.SUCCEEDED, offset=500, limit=1)).items[0].id
        middle = counts.succeeded // 2
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "counts()": store.counts,
            "throughput(second, 300)": lambda: store.throughput("second", 300),
            "throughput(minute, 60)": lambda: store.throughput("minute", 60),
            "throughput(hour, 24)": lambda: store.throughput("hour", 24),
            "throughput(day, 7)": lambda: store.throughput("day", 7),
            "queues()": store.queues,
            "jobs(succeeded) first page": lambda: store.jobs(JobState.SUCCEEDED),
            f"jobs(succeeded) page at {middle:,}": lambda: store.jobs(JobState.SUCCEEDED, offset=middle),
            "jobs(succeeded, queue)": lambda: store.jobs(JobState.SUCCEEDED, queue=queues[7]),
            "jobs(succeeded, type)": lambda: store.jobs(
                JobState.SUCCEEDED, request_type=kinds[2].message_name
            ),
            "jobs(succeeded, queue, type)": lambda: store.jobs(
                JobState.SUCCEEDED, queue=queues[7], request_type=kinds[2].message_name
            ),
            "jobs(failed) first page": lambda: store.jobs(JobState.FAILED),
            "jobs(enqueued) first page": lambda: store.jobs(JobState.ENQUEUED),
            "jobs(enqueued, type)": lambda: store.jobs(JobState.ENQUEUED, request_type=Work.message_name),
            "jobs(scheduled)": lambda: store.jobs(JobState.SCHEDULED),
            "jobs(running)": lambda: store.jobs(JobState.RUNNING),
            "jobs(retrying)": lambda: store.jobs(JobState.RETRYING),
            "request_types()": store.request_types,
            "job(id)": lambda: store.job(some_id),
            "job(unknown id)": lambda: store.job("no-such-job"),
            "workers()": store.workers,
            "recurring()": store.recurring,
        }
        print(
            f"\n{'store call':40} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  "
            f"(target p95 < {TARGET_MS:.0f} ms)"
        )
        worst = 0.0
        for name, call in calls.items():
            times = sorted(await timed(call, options.repeat))
            p95 = times[max(int(len(times) * 0.95) - 1, 0)]
            worst = max(worst, p95)
            flag = "" if p95 < TARGET_MS else "  OVER"
            print(f"{name:40} {statistics.median(times):8.2f} {p95:8.2f} {times[-1]:8.2f}{flag}")
        print(f"\nworst p95 {worst:.2f} ms: {'meets' if worst < TARGET_MS else 'MISSES'} the target")
        info = await mediator._jobs.redis.info("memory")
        print(f"Redis used_memory {int(info['used_memory']) / 2**20:.0f} MiB")


def work_for(kind: type[Work]) -> Callable[..., Awaitable[int]]:
    """Return a handler of *kind* (each request type needs its own)."""

    async def handle(request: Work) -> int:
        return await work(request)

    handle.__annotations__ = {"request": kind, "return": int}
    return handle


def main() -> None:
    """Start a private redis-server, fill it, measure, print, stop it."""
    # The failing jobs fail on purpose and the queues are spread on purpose: no log line per job.
    logging.getLogger("arq_mediator").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--succeeded", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=1_000)
    parser.add_argument("--queues", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=50)
    options = parser.parse_args()
    with private_redis_server() as url:
        asyncio.run(measure(url, options))


if __name__ == "__main__":
    main()
