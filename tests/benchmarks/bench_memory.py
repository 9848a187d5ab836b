"""Benchmark: Redis memory per job, for arq-mediator and raw arq, on a private redis-server.

Measured as the growth of ``used_memory`` over N jobs, divided by N:

1. a queued job (envelope, queue entry);
2. a succeeded job's retained result (with ``keep_result``'s default of a day);
3. a failed job's retained record (``keep_failed``, a week, listed for requeue), with a short traceback;
4. each of these with the job history off too, and the difference: what the history (`JobHistory`: steps,
   payload, indexes, counters) costs per job; and what a succeeded job's history alone takes once its
   result expired (the history is kept for ``keep_jobs``, a day by default, results for ``keep_result``).

With ``--breakdown`` it also prints where a queued job's and a retained result's bytes go, key by key
(`memory_breakdown`).

Run from the repository root: python tests/benchmarks/bench_memory.py [--jobs 20000] [--breakdown]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from arq.connections import RedisSettings, create_pool
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from arq_mediator import JobHistory, Mediator, Request, Worker, WorkerSettings  # noqa: E402
from arq_mediator._keys import RESULT_PREFIX  # noqa: E402
from tests.benchmarks.memory_breakdown import breakdown, report  # noqa: E402
from tests.benchmarks.private_redis import private_redis_server  # noqa: E402

# The breakdowns' lines, printed after the figures (filled only with --breakdown).
BREAKDOWNS: list[str] = []


class Noop(Request[None]):
    """The smallest job: no fields, no result."""


class Broken(Request[None]):
    """A job that fails at once."""


async def noop(request: Noop) -> None:
    """Do nothing."""


async def broken(request: Broken) -> None:
    """Fail."""
    raise ValueError("broken on purpose")


async def used_memory(redis: Redis) -> int:
    """Return the server's used_memory, in bytes."""
    info = await redis.info("memory")
    return int(info["used_memory"])


async def drained(mediator: Mediator, jobs: int) -> None:
    """Run a worker until *jobs* jobs finished."""
    worker = Worker(mediator, WorkerSettings(queues=["default"], max_jobs=50, idle_check=0.05))
    running = asyncio.create_task(worker.run())
    while worker.counters.succeeded + worker.counters.failed < jobs:  # noqa: ASYNC110 - counters, no event
        await asyncio.sleep(0.05)
    worker.stop()
    await running


async def measure(url: str, jobs: int, *, explain: bool = False) -> dict[str, float]:
    """Return bytes per job for each measure, arq-mediator's (history on and off) and raw arq's."""
    with_history = await measure_ours(url, jobs, JobHistory(), "arq-mediator", explain=explain)
    without = await measure_ours(url, jobs, None, "arq-mediator, history off", explain=explain)
    figures = with_history | without
    for what in ("queued job", "retained result", "retained failure"):
        figures[f"history's share of a {what}"] = (
            with_history[f"arq-mediator {what}"] - without[f"arq-mediator, history off {what}"]
        )
    return figures | await measure_arq(url, jobs)


async def measure_ours(
    url: str, jobs: int, history: JobHistory | None, label: str, *, explain: bool = False
) -> dict[str, float]:
    """Return arq-mediator's bytes per job, labelled *label*, with *history*; *explain*: break them down."""
    client: Redis = Redis.from_url(url)
    mediator = Mediator(redis=url, history=history)
    mediator.handler(noop)
    mediator.handler(broken)
    figures: dict[str, float] = {}
    async with mediator:
        await client.flushall()
        await mediator.enqueue(Noop())  # the queue's own keys exist before the baseline is taken
        empty = base = await used_memory(client)
        for start in range(0, jobs, 1000):
            await mediator.enqueue_many([Noop() for _ in range(min(1000, jobs - start))])
        figures[f"{label} queued job"] = queued = (await used_memory(client) - base) / jobs
        if explain:
            groups, rest = await breakdown(client, jobs, await used_memory(client) - empty)
            BREAKDOWNS.extend(report(f"{label}: a queued job", groups, rest, jobs))
        base = await used_memory(client)
        await drained(mediator, jobs + 1)
        # Finished, each job's envelope went and its result came: the growth since is result minus job.
        finished = await used_memory(client)
        figures[f"{label} retained result"] = (finished - base) / jobs + queued
        if explain:
            groups, rest = await breakdown(client, jobs, finished - empty)
            BREAKDOWNS.extend(report(f"{label}: a retained result", groups, rest, jobs))
        if history is not None:  # as if the results expired: what the history alone keeps
            results = [key async for key in client.scan_iter(match=RESULT_PREFIX + "*", count=1000)]
            for start in range(0, len(results), 1000):
                await client.delete(*results[start : start + 1000])
            figures[f"{label} history alone"] = (await used_memory(client) - finished) / jobs + (
                figures[f"{label} retained result"]
            )
        await client.flushall()
        base = await used_memory(client)
        failures = jobs // 10
        for start in range(0, failures, 1000):
            await mediator.enqueue_many([Broken() for _ in range(min(1000, failures - start))])
        await drained(mediator, failures)
        figures[f"{label} retained failure"] = (await used_memory(client) - base) / failures
    await client.aclose()
    return figures


async def measure_arq(url: str, jobs: int) -> dict[str, float]:
    """Return raw arq's bytes per queued job."""
    client: Redis = Redis.from_url(url)
    figures: dict[str, float] = {}
    arq = await create_pool(RedisSettings.from_dsn(url))
    await client.flushall()
    await arq.enqueue_job("noop")
    base = await used_memory(client)
    for _ in range(jobs):
        await arq.enqueue_job("noop")
    figures["raw arq queued job"] = (await used_memory(client) - base) / jobs
    await arq.aclose()
    await client.aclose()
    return figures


def main() -> None:
    """Start a private redis-server, measure, print, stop it."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--breakdown", action="store_true", help="also show where the bytes go, per key")
    options = parser.parse_args()
    with private_redis_server() as url:
        figures = asyncio.run(measure(url, options.jobs, explain=options.breakdown))
    print(f"Redis memory per job, {options.jobs:,} jobs (used_memory growth / jobs)")
    for label, value in figures.items():
        print(f"  {label:44} {value:8.0f} B")
    print("\n".join(BREAKDOWNS))


if __name__ == "__main__":
    main()
