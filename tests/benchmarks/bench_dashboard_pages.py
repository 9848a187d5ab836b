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
import sys
from functools import partial
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from arq_mediator.dashboard import JobState, dashboard_app  # noqa: E402
from tests.benchmarks.dashboard_history import Timings, filled_history, run, timed  # noqa: E402
from tests.dashboard.serving import serving  # noqa: E402


async def measure(url: str, options: argparse.Namespace) -> None:
    """Fill the history, serve the dashboard, and time every page."""
    async with filled_history(url, options) as history:
        store, queues, counts = history.store, history.queues, history.counts
        failed_id = (
            (await store.jobs(JobState.FAILED, offset=min(100, counts.failed - 1), limit=1)).items[0].id
        )
        deep = min(500, counts.succeeded - 1)
        succeeded_id = (await store.jobs(JobState.SUCCEEDED, offset=deep, limit=1)).items[0].id
        middle = max(counts.succeeded // 2 // 50, 1)
        type_name = history.kinds[2].message_name
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

            async def fetch(path: str, status: int) -> None:
                response = await client.get(path)
                if response.status_code != status:
                    raise RuntimeError(f"GET {path} answered {response.status_code}, not {status}")

            table = Timings("page")
            for name, path in pages.items():
                status = 404 if name.endswith("(404)") else 200
                table.row(name, await timed(partial(fetch, path, status), options.repeat))
            table.verdict()


if __name__ == "__main__":
    run((__doc__ or "").split("\n", 1)[0], measure)
