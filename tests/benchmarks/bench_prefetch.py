"""Benchmark: the worker's prefetch (`WorkerSettings.prefetch`), one code base at several settings.

The same worker processes as `bench_peers.py` (its CLI, concurrency 20, the peers' workload and tallies),
started with ``--prefetch N`` for each N asked, on one private redis-server flushed between phases. Per
round and setting: one-worker drains of the sleep-10-ms, no-op and round-trip bodies, a two-worker
round-trip drain, and the idle pickup (enqueue -> start, p50). Settings run in an order rotated each round,
so on a shared machine each takes each place in turn; the report gives each measure's median and range
per setting. Comparing settings of one build isolates the prefetch from everything else a branch changes.

Run from the repository root: python tests/benchmarks/bench_prefetch.py [--rounds N] [--jobs N]
[--settings 0,8]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: import the peer modules as the workers do
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.peers import mediator_peer  # noqa: E402
from tests.benchmarks.peers.measure import Plan, RedisServerProcess, VariantBench  # noqa: E402
from tests.benchmarks.peers.system import Variant  # noqa: E402
from tests.processes import free_port  # noqa: E402

MEASURES = {
    "drain_sleep": ("one worker, sleep 10 ms body (jobs/s; ideal 2,000)", 1.0),
    "drain_noop": ("one worker, no-op body (jobs/s)", 1.0),
    "drain": ("one worker, round-trip body (jobs/s)", 1.0),
    "drain_two": ("two workers, round-trip body (jobs/s)", 1.0),
    "pickup_p50": ("idle pickup p50 (ms)", 1000.0),
}


def variant(prefetch: int) -> Variant:
    """Return arq-mediator's peer variant with its worker started at ``--prefetch`` *prefetch*."""
    base = mediator_peer.VARIANTS[0]
    return dataclasses.replace(
        base, name=f"prefetch {prefetch}", command=[*base.command, "--prefetch", str(prefetch)]
    )


async def measure(bench: VariantBench, jobs: int) -> dict[str, float]:
    """Run one setting's drains and idle pickups on its (flushed) server."""
    found: dict[str, float] = {}
    async with AsyncExitStack() as stack:
        stack.push_async_callback(bench.control.aclose)
        await bench.client.open()
        stack.push_async_callback(bench.client.close)
        for kind, name in (("sleep", "drain_sleep"), ("noop", "drain_noop"), ("roundtrip", "drain")):
            await bench.reset()
            await bench.client.preload(kind, jobs)
            with bench.workers(1) as workers:
                found[name] = (await bench.drain(workers, jobs)).rate
                if kind == "roundtrip":
                    found.update(await bench.latencies(workers))
        await bench.reset()
        await bench.client.preload("roundtrip", jobs)
        with bench.workers(2) as workers:
            found["drain_two"] = (await bench.drain(workers, jobs)).rate
        await bench.reset()
    return found


def load() -> str:
    """Return the load averages."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


async def run(settings: list[int], rounds: int, jobs: int) -> None:
    """Measure every setting *rounds* times, rotating their order, and print each measure per setting."""
    work_dir = Path(tempfile.mkdtemp(prefix="arqm-prefetch-"))
    plan = Plan(jobs, jobs, jobs, 30, 8, warmup=3, steady_rate=500, steady_seconds=0)
    server = RedisServerProcess(work_dir / "redis", free_port())
    found: dict[int, list[dict[str, float]]] = {setting: [] for setting in settings}
    print(f"prefetch settings {settings}, {rounds} round(s) of {jobs:,} jobs a drain; logs in {work_dir}")
    try:
        await server.ready()
        for number in range(rounds):
            shift = number % len(settings)
            order = settings[shift:] + settings[:shift]
            print(f"round {number + 1}/{rounds}: prefetch {order} (load {load()})")
            for setting in order:
                bench = VariantBench(variant(setting), server.url, plan, work_dir)
                found[setting].append(measures := await measure(bench, jobs))
                print(f"  prefetch {setting:3}: " + ", ".join(f"{k} {v:,.4g}" for k, v in measures.items()))
    finally:
        server.stop()
    print(f"\nmedian (range) over {rounds} round(s); load average now {load()}")
    for key, (title, scale) in MEASURES.items():
        print(f"\n{title}")
        for setting in settings:
            values = [measures[key] * scale for measures in found[setting]]
            print(
                f"  prefetch {setting:3}  {statistics.median(values):8,.2f}  "
                f"({min(values):,.2f}-{max(values):,.2f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each in a rotated order (default 3)")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per drain (default 2,000)")
    parser.add_argument("--settings", default="0,8", help="comma-separated prefetch values (default 0,8)")
    arguments = parser.parse_args()
    settings = [int(value) for value in arguments.settings.split(",")]
    if arguments.rounds < 1 or arguments.jobs < 100 or any(value < 0 for value in settings):
        parser.error("--rounds must be at least 1, --jobs at least 100, and the settings 0 or more")
    asyncio.run(run(settings, arguments.rounds, arguments.jobs))


if __name__ == "__main__":
    main()
