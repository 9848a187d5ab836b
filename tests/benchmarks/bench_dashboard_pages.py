"""Benchmark: the dashboard's pages over HTTP at scale, on a private redis-server.

The history is filled as `bench_dashboard_store.py` fills it (real jobs run by a real worker: by default
100,000 succeeded and 10,000 failed over 50 queues and 5 request types, 1,000 more waiting); then the
dashboard is served by uvicorn on loopback and each page is requested over HTTP (p50, p95, max of the
repetitions, from request to the last byte of HTML). Target: p95 under 100 ms for every page.

Run from the repository root: python tests/benchmarks/bench_dashboard_pages.py [--succeeded 100000]
[--failed 10000] [--queues 50] [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from arq_mediator import Mediator  # noqa: E402
from arq_mediator.dashboard import JobState, RedisDashboardSource, dashboard_app  # noqa: E402
from tests.benchmarks.bench_dashboard_store import Work, fill, request_types, work_for  # noqa: E402
from tests.benchmarks.private_redis import private_redis_server  # noqa: E402
from tests.dashboard.serving import serving  # noqa: E402

TARGET_MS = 100.0


async def timed(client: httpx.AsyncClient, path: str, repeat: int) -> list[float]:
    """Return the milliseconds each of *repeat* GETs of *path* took (after one warm-up request)."""
    (await client.get(path)).raise_for_status()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        response = await client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
    return times


async def measure(url: str, options: argparse.Namespace) -> None:
    """Fill the history, serve the dashboard, and time every page."""
    mediator = Mediator(redis=url)
    kinds = request_types()
    for kind in kinds:
        mediator.handler(work_for(kind))
    queues = [f"queue-{index:02d}" for index in range(options.queues)]
    mediator.recurring(Work(n=0), cron="0 0 1 1 *", name="yearly")
    async with mediator:
        seconds = await fill(mediator, kinds, queues, options.succeeded, options.failed)
        for start in range(0, options.waiting, 1000):
            batch = [Work(n=n) for n in range(start, min(start + 1000, options.waiting))]
            await mediator.enqueue_many(batch, queue=queues[0])
        store = RedisDashboardSource(mediator)
        counts = await store.counts()
        print(
            f"filled in {seconds:.0f} s: {counts.succeeded:,} succeeded, {counts.failed:,} failed, "
            f"{counts.enqueued:,} enqueued, over {len(queues)} queues and {len(kinds)} request types"
        )
        failed_id = (
            (await store.jobs(JobState.FAILED, offset=min(100, counts.failed - 1), limit=1)).items[0].id
        )
        deep = min(500, counts.succeeded - 1)
        succeeded_id = (await store.jobs(JobState.SUCCEEDED, offset=deep, limit=1)).items[0].id
        middle = max(counts.succeeded // 2 // 50, 1)
        type_name = kinds[2].message_name
        pages = {
            "overview /": "/",
            "queues": "/queues",
            "jobs/succeeded page 1": "/jobs/succeeded",
            f"jobs/succeeded page {middle:,}": f"/jobs/succeeded?page={middle}",
            "jobs/succeeded by queue": f"/jobs/succeeded?queue={queues[7]}",
            "jobs/succeeded by type": f"/jobs/succeeded?type={type_name}",
            "jobs/succeeded by queue and type": f"/jobs/succeeded?queue={queues[7]}&type={type_name}",
            "jobs/failed page 1": "/jobs/failed",
            "jobs/enqueued page 1": "/jobs/enqueued",
            "jobs/scheduled": "/jobs/scheduled",
            "jobs/running": "/jobs/running",
            "jobs/retrying": "/jobs/retrying",
            "jobs/aborted": "/jobs/aborted",
            "job/{id} failed": f"/job/{failed_id}",
            "job/{id} succeeded": f"/job/{succeeded_id}",
            "job/{unknown} (404)": "/job/no-such-job",
            "recurring": "/recurring",
            "workers": "/workers",
        }
        async with (
            serving(dashboard_app(store)) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            heading = f"{'page':40} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
            print(f"\n{heading}  (target p95 < {TARGET_MS:.0f} ms)")
            worst = 0.0
            for name, path in pages.items():
                try:
                    times = sorted(await timed(client, path, options.repeat))
                except httpx.HTTPStatusError as error:
                    if error.response.status_code != 404 or "unknown" not in name:
                        raise
                    times = sorted(await _timed_any(client, path, options.repeat))
                p95 = times[max(int(len(times) * 0.95) - 1, 0)]
                worst = max(worst, p95)
                flag = "" if p95 < TARGET_MS else "  OVER"
                print(f"{name:40} {statistics.median(times):8.2f} {p95:8.2f} {times[-1]:8.2f}{flag}")
            print(f"\nworst p95 {worst:.2f} ms: {'meets' if worst < TARGET_MS else 'MISSES'} the target")


async def _timed_any(client: httpx.AsyncClient, path: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await client.get(path)
        times.append((time.perf_counter() - began) * 1000)
    return times


def main() -> None:
    """Start a private redis-server, fill it, measure, print, stop it."""
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
