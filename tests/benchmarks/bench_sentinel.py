"""Benchmark: what Sentinel and the durable enqueue cost, and what a killed master costs, on loopback.

Starts its own deployments (a master, replicas and three sentinels, from `tests/sentinel/deployment.py`)
in a temporary folder and stops them by PID. Prints:

* enqueue latency (ms per call, one at a time, and per batch of 100 with `enqueue_many`) straight to the
  master by ``redis://``, through the sentinels, and through the sentinels with a durable enqueue
  (``WAIT 1``), in interleaved rounds so that drift on a shared machine hits every variant alike;
* a master SIGKILLed under a steady producer and two worker processes, without and with the durable
  enqueue, and with it on two replicas: seconds until a job enqueued after the kill finished, enqueues
  refused meanwhile, acknowledged enqueues lost.

Run: python tests/benchmarks/bench_sentinel.py [--calls N] [--rounds K] [--no-failover]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if (
    str(ROOT) not in sys.path
):  # run as a script: import the test app as the workers do, from the repository root
    sys.path.insert(0, str(ROOT))

from arq_mediator import Durability, Mediator  # noqa: E402
from tests.jobs.process_app import Chore, build  # noqa: E402
from tests.jobs.worker_processes import Workers, wait_for_workers  # noqa: E402
from tests.processes import ManagedProcesses  # noqa: E402
from tests.sentinel.deployment import SentinelDeployment  # noqa: E402
from tests.sentinel.failover import FailoverFigures, kill_master_under_load  # noqa: E402

BATCH = 100
DIRECT = "enqueue, redis:// to the master"
DIRECT_BATCH = f"enqueue_many({BATCH}), redis://"


async def one_at_a_time(mediator: Mediator, calls: int, durable: bool) -> list[float]:
    """Return the seconds each of *calls* enqueues took, one after another."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await mediator.enqueue(Chore(), durable=durable)
        samples.append(time.perf_counter() - started)
    return samples


async def in_batches(mediator: Mediator, calls: int, durable: bool) -> list[float]:
    """Return the seconds each batch of `BATCH` enqueues took."""
    samples = []
    for _ in range(max(calls // BATCH, 1)):
        started = time.perf_counter()
        await mediator.enqueue_many([Chore() for _ in range(BATCH)], durable=durable)
        samples.append(time.perf_counter() - started)
    return samples


Measure = Callable[[Mediator, int, bool], Awaitable[list[float]]]


async def latencies(deployment: SentinelDeployment, calls: int, rounds: int) -> dict[str, list[float]]:
    """Measure every variant in interleaved rounds; return its samples (seconds) by name."""
    direct = f"redis://127.0.0.1:{deployment.master.port}/0"
    samples: dict[str, list[float]] = {}
    async with build(direct) as straight, build(deployment.url()) as through:
        variants: dict[str, tuple[Mediator, Measure, bool]] = {
            DIRECT: (straight, one_at_a_time, False),
            "enqueue, through Sentinel": (through, one_at_a_time, False),
            "enqueue, through Sentinel, durable": (through, one_at_a_time, True),
            DIRECT_BATCH: (straight, in_batches, False),
            f"enqueue_many({BATCH}), Sentinel": (through, in_batches, False),
            f"enqueue_many({BATCH}), Sentinel, durable": (through, in_batches, True),
        }
        for mediator, measure, durable in variants.values():  # warm up: connections, scripts loaded
            await measure(mediator, BATCH, durable)
        for _ in range(rounds):
            for name, (mediator, measure, durable) in variants.items():
                samples.setdefault(name, []).extend(await measure(mediator, calls // rounds, durable))
    return samples


async def failover(directory: Path, *, durable: bool, replicas: int) -> FailoverFigures:
    """Kill the master of a fresh deployment under load; return what it cost."""
    deployment = SentinelDeployment(directory / "redis", replica_count=replicas)
    processes = ManagedProcesses(directory)
    try:
        await deployment.start()
        workers = Workers(deployment.url(), processes)
        for name in ("one", "two"):
            workers.start(name, ["default"], max_jobs=8, lease=3.0, heartbeat=0.3)
        async with build(deployment.url()) as mediator:
            mediator.durable_enqueue = Durability(replicas=1, timeout=1.0) if durable else None
            await wait_for_workers(mediator, "one", "two", diagnose=workers.logs)
            return await kill_master_under_load(mediator, deployment)
    finally:
        processes.stop_all()
        deployment.stop()


def percentile(values: list[float], fraction: float) -> float:
    """Return the value below which *fraction* of *values* lie."""
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


async def run(arguments: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sentinel-") as folder:
        directory = Path(folder)
        deployment = SentinelDeployment(directory / "latency")
        try:
            await deployment.start()
            samples = await latencies(deployment, arguments.calls, arguments.rounds)
        finally:
            deployment.stop()
        print(f"{'variant':40} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'vs redis://':>11}")
        for name, values in samples.items():
            p50 = statistics.median(values)
            ratio = p50 / statistics.median(samples[DIRECT_BATCH if "many" in name else DIRECT])
            print(
                f"{name:40} {p50 * 1000:8.3f} {percentile(values, 0.9) * 1000:8.3f} "
                f"{percentile(values, 0.99) * 1000:8.3f} {ratio:10.2f}x"
            )
        if arguments.no_failover:
            return
        columns = f"{'flowing s':>9} {'acked':>6} {'refused':>8} {'lost':>5} {'failed':>6}"
        print(f"\n{'master SIGKILLed under load':40} {columns}")
        cases = [("async replication, 1 replica", False, 1), ("durable, 1 replica", True, 1)]
        cases.append(("durable, 2 replicas", True, 2))
        for index, (name, durable, replicas) in enumerate(cases):
            figures = await failover(directory / f"failover-{index}", durable=durable, replicas=replicas)
            print(
                f"{name:40} {figures.flowing_again:9.1f} {figures.acknowledged:6d} {figures.refused:8d} "
                f"{len(figures.lost):5d} {figures.failed:6d}"
            )


def main() -> None:
    # The latency rounds run without workers on purpose: the producer's "no live worker" warning is noise.
    logging.getLogger("arq_mediator.producer").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=2000, help="enqueues per variant, in all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-failover", action="store_true", help="measure latency only")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
