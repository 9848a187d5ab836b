"""Benchmark: arq-mediator against its peers (arq, saq, taskiq, streaq), same workload, same runs.

Every system runs the same job (``tests/benchmarks/peers/workload.py``) in worker processes started with its
own CLI, at concurrency 20, each variant on a private redis-server flushed between phases; variants are the
system's defaults and, where its documentation offers faster settings, those. Per run and variant:

* memory: Redis ``used_memory`` growth per queued job, with N jobs queued and no worker;
* drains of N pre-queued jobs by one worker (round-trip body: one RPUSH; no-op body; sleep 10 ms body),
  and by two workers (round-trip), timed from the job tallies the workers keep over the span all of them
  were running, so process start-up is left out; worker CPU and Redis CPU per job from the one-worker
  round-trip drain, and Redis CPU per job from the two-worker one;
* latency on an idle worker, one job at a time: enqueue -> start (idle pickup) and enqueue -> result
  returned through the system's own result API;
* enqueue -> start p50 and p99 while enqueueing a steady 500 jobs/s, one at a time, to two workers;
* once per run, the body-only ceiling: the round-trip body at concurrency 20 with no queue.

Variants run in an order rotated each run (the machine may be shared and noisy); the report gives medians
and ranges over the runs and arq-mediator's ratio to each peer within the same run (> 1: arq-mediator is
better). Needs the ``bench`` extra: ``pip install -e '.[bench]'``.

Run from the repository root: python tests/benchmarks/bench_peers.py [--runs N] [--jobs N] [--quick]
[--only arq-mediator,saq] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: import the peer modules as the workers do
    sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from tests.benchmarks.peers import arq_peer, mediator_peer, saq_peer, streaq_peer, taskiq_peer  # noqa: E402
from tests.benchmarks.peers.measure import Plan, RedisServerProcess, VariantBench, ceiling  # noqa: E402
from tests.benchmarks.peers.report import CEILING, Run, markdown, render  # noqa: E402
from tests.benchmarks.peers.system import Variant  # noqa: E402
from tests.processes import free_port  # noqa: E402

VARIANTS: list[Variant] = [
    *mediator_peer.VARIANTS,
    *arq_peer.VARIANTS,
    *saq_peer.VARIANTS,
    *taskiq_peer.VARIANTS,
    *streaq_peer.VARIANTS,
]
PACKAGES = [
    *("arq-mediator", "arq", "saq", "taskiq", "taskiq-redis", "streaq"),
    *("redis", "hiredis", "coredis", "pydantic"),
]
FULL = Plan(
    jobs=5000,
    body_jobs=2500,
    slow_jobs=1000,
    latency_samples=30,
    slow_latency_samples=8,
    warmup=3,
    steady_rate=500,
    steady_seconds=3,
)
QUICK = Plan(
    jobs=300,
    body_jobs=300,
    slow_jobs=300,
    latency_samples=8,
    slow_latency_samples=2,
    warmup=1,
    steady_rate=500,
    steady_seconds=0.5,
)


def version(distribution: str) -> str:
    """Return an installed distribution's version, or '-'."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def cpu_model() -> str:
    """Return the CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load() -> str:
    """Return the load averages."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def rotated(variants: list[Variant], run: int) -> list[Variant]:
    """Return *variants* in run *run*'s order: rotated by one each run, so each takes each place in turn."""
    shift = run % len(variants)
    return variants[shift:] + variants[:shift]


def chosen(only: str | None) -> list[Variant]:
    """Return the variants named in *only* (comma-separated), or all; refuse unknown names."""
    if not only:
        return VARIANTS
    names = [name.strip() for name in only.split(",") if name.strip()]
    known = {variant.name: variant for variant in VARIANTS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [known[name] for name in names]


async def server_version(url: str) -> str:
    """Return the version of the Redis server at *url*."""
    client: Redis = Redis.from_url(url)
    try:
        info: dict[str, Any] = await client.info("server")
        return str(info.get("redis_version", "?"))
    finally:
        await client.aclose()


async def run(plan: Plan, variants: list[Variant], runs: int) -> list[Run]:
    """Run the benchmark *runs* times, print the report and return every run's numbers."""
    work_dir = Path(tempfile.mkdtemp(prefix="arqm-peers-"))
    began = time.perf_counter()
    print(f"arq-mediator peer benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}, {platform.platform()}; load average {load()}; "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    print("versions: " + ", ".join(f"{name} {version(name)}" for name in PACKAGES))
    names = [CEILING, *(variant.name for variant in variants)]
    servers = {name: RedisServerProcess(work_dir / name, free_port()) for name in names}
    results: list[Run] = []
    try:
        for server in servers.values():
            await server.ready()
        print(f"Redis server {await server_version(servers[CEILING].url)}, one private server per variant")
        print(
            f"work: {plan.jobs:,} jobs a round-trip drain, {plan.body_jobs:,} a no-op or sleep drain "
            f"(at most {plan.slow_jobs:,} for 0.5 s polls), concurrency 20, {runs} run(s); logs in {work_dir}"
        )
        for variant in variants:
            print(f"  {variant.name:14} {variant.settings}")
        for number in range(runs):
            order = rotated(variants, number)
            sequence = ", ".join(variant.name for variant in order)
            print(f"\nrun {number + 1}/{runs}: {sequence} (load {load()})")
            found: Run = {CEILING: await ceiling(servers[CEILING].url, plan.jobs)}
            print(f"  {CEILING:14} {found[CEILING]['drain']:8,.0f} jobs/s")
            for variant in order:
                started = time.perf_counter()
                bench = VariantBench(variant, servers[variant.name].url, plan, work_dir)
                found[variant.name] = measures = await bench.measure()
                print(
                    f"  {variant.name:14} {measures['drain']:8,.0f} jobs/s one worker, "
                    f"{measures['drain_two']:8,.0f} two, pickup p50 {measures['pickup_p50'] * 1000:7.2f} ms "
                    f"({time.perf_counter() - started:.0f} s)"
                )
            results.append(found)
    finally:
        for server in servers.values():
            server.stop()
    print(f"\nsummary over {runs} run(s): medians (ranges); ratios > 1 mean arq-mediator is better\n")
    print(render(results, names))
    print(f"\nload average now {load()}; took {time.perf_counter() - began:.0f} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=None, help="runs, each in a rotated order (default 3)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="jobs per round-trip drain (default 5,000; the no-op and sleep drains at most 2,500)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 jobs, 1 run, few samples")
    parser.add_argument("--only", help="comma-separated variant names, e.g. arq-mediator,saq")
    parser.add_argument("--json", type=Path, help="also write every run's numbers to this file")
    parser.add_argument(
        "--markdown", action="store_true", help="also print arq-mediator against the best peer as Markdown"
    )
    arguments = parser.parse_args()
    plan = QUICK if arguments.quick else FULL
    if arguments.jobs is not None:
        if arguments.jobs < 100:
            parser.error("--jobs must be at least 100")
        smaller = {name: min(getattr(plan, name), arguments.jobs) for name in ("body_jobs", "slow_jobs")}
        plan = Plan(**{**plan.__dict__, "jobs": arguments.jobs, **smaller})
    runs = arguments.runs if arguments.runs is not None else (1 if arguments.quick else 3)
    if runs < 1:
        parser.error("--runs must be at least 1")
    results = asyncio.run(run(plan, chosen(arguments.only), runs))
    if arguments.markdown:
        print(f"\n{markdown(results)}")
    if arguments.json is not None:
        document = {
            "versions": {name: version(name) for name in PACKAGES},
            "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version()},
            "plan": plan.__dict__,
            "runs": results,
        }
        arguments.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
