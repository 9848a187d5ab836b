"""Redis's own time per ENQUEUE script call, with no worker serving the queue (a backlog builds).

What the enqueue costs Redis when no idle worker waits for the job: the case every enqueue under load is
in. Enqueues one job at a time (and `enqueue_many` batches) into a private redis-server, then reads the
script calls' ``usec_per_call`` from ``INFO commandstats``; the client's own time does not enter it. Run
it with one build and another (``PYTHONPATH=<other tree>/src``) in turn to compare them.

    .venv/bin/python tests/benchmarks/bench_enqueue_cost.py [--jobs 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.peers.mediator_peer import MediatorClient, WorkRequest  # noqa: E402
from tests.benchmarks.private_redis import private_redis_server  # noqa: E402

BATCH = 100


async def _per_call(redis: Redis) -> float:
    stats = await redis.info("commandstats")
    scripts = stats.get("cmdstat_evalsha") or {}
    return float(scripts.get("usec_per_call", 0.0))


async def _round(url: str, jobs: int) -> tuple[float, float]:
    client = MediatorClient(url)
    await client.open()
    control: Redis = Redis.from_url(url)
    try:
        mediator = client.mediator
        for _ in range(200):  # warm-up: script loading, connections
            await mediator.enqueue(WorkRequest(kind="noop", sent=0.0))
        await control.flushall()
        await control.config_resetstat()
        for _ in range(jobs):
            await mediator.enqueue(WorkRequest(kind="noop", sent=0.0))
        one = await _per_call(control)
        await control.flushall()
        await control.config_resetstat()
        for _ in range(jobs // BATCH):
            await mediator.enqueue_many([WorkRequest(kind="noop", sent=0.0) for _ in range(BATCH)])
        batch = await _per_call(control) / BATCH
        return one, batch
    finally:
        await control.aclose()
        await client.close()


async def _rounds(url: str, jobs: int, rounds: int) -> tuple[list[float], list[float]]:
    ones, batches = [], []
    for _ in range(rounds):
        one, batch = await _round(url, jobs)
        ones.append(one)
        batches.append(batch)
    return ones, batches


def main(jobs: int, rounds: int) -> None:
    """Run *rounds* rounds of *jobs* enqueues on a private redis-server and print Redis's time per job."""
    with private_redis_server() as url:
        ones, batches = asyncio.run(_rounds(url, jobs, rounds))
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"ENQUEUE, no worker ({jobs} jobs a round, {rounds} rounds, load {load}), Redis us per job:")
    for title, values in (("one at a time", ones), (f"enqueue_many({BATCH})", batches)):
        print(f"  {title:20} {statistics.median(values):6.2f}  ({min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=20000, help="jobs a round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds")
    options = parser.parse_args()
    main(options.jobs, options.rounds)
