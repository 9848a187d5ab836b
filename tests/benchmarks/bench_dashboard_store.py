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
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from arq_mediator.dashboard import JobState  # noqa: E402
from tests.benchmarks.dashboard_history import Timings, Work, filled_history, run, timed  # noqa: E402


async def measure(url: str, options: argparse.Namespace) -> None:
    """Fill the history, then time every store call the pages make."""
    async with filled_history(url, options) as history:
        store, queues, kinds = history.store, history.queues, history.kinds
        some_id = (await store.jobs(JobState.SUCCEEDED, offset=500, limit=1)).items[0].id
        middle = history.counts.succeeded // 2
        calls: dict[str, Callable[[], Awaitable[object]]] = {
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
        table = Timings("store call")
        for name, call in calls.items():
            table.row(name, await timed(call, options.repeat))
        table.verdict()
        info = await history.mediator._jobs.redis.info("memory")
        print(f"Redis used_memory {int(info['used_memory']) / 2**20:.0f} MiB")


if __name__ == "__main__":
    run((__doc__ or "").split("\n", 1)[0], measure)
