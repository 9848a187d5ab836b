"""Benchmark: the transactional outbox on PostgreSQL, against a plain enqueue after the commit.

Prints, in one run on one machine:

1. the time of one business transaction that also enqueues a job: through the outbox (insert + NOTIFY in
   the transaction, commit included) against the same transaction committed and then `mediator.enqueue`;
2. relay lag, from a transaction's COMMIT being sent to its job being in Redis, at a steady 200 commits/s
   with the relay in a process of its own (``python -m arq_mediator relay``), woken by NOTIFY.
   Target: p50 < 20 ms.

A job's arrival in Redis is read from its queue score: the enqueue script scores a job due now with the
Redis server's clock at the push, and Redis runs on this machine, so its clock is the writer's.

It starts a private redis-server (on a free port, stopped by PID at the end) and creates a PostgreSQL
database of its own on DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres), dropped at
the end. Run from the repository root: python tests/benchmarks/bench_outbox.py [--seconds S] [--ops N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from arq_mediator import Context, Mediator, Request
from arq_mediator.outbox import Outbox, outbox_table

ROOT = Path(__file__).resolve().parents[2]
REDIS_ENV = "ARQM_BENCH_OUTBOX_REDIS_URL"
QUEUE = "bench-outbox"
TABLE = "bench_outbox"
RATE = 200  # commits per second for the lag measurement

metadata = MetaData()
jobs_table = outbox_table(metadata, TABLE)
# The business row each transaction writes, as an application's would.
orders = Table("bench_orders", metadata, Column("id", Integer, primary_key=True), Column("note", String(50)))


class Ship(Request[None]):
    """A follow-up job of an order; never run here (the benchmark reads where it is queued)."""

    order: str


async def ship(request: Ship, ctx: Context) -> None:
    """Do nothing: no worker runs in this benchmark."""


def build(redis_url: str | None) -> Mediator:
    """Return a mediator on *redis_url* that can enqueue `Ship`."""
    built = Mediator(redis=redis_url)
    built.handler(queue=QUEUE)(ship)
    return built


# The relay process imports this module and relays this mediator's outbox (--table bench_outbox).
mediator = build(os.environ.get(REDIS_ENV))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("the outbox benchmark needs redis-server on PATH")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(directory)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return process, f"redis://127.0.0.1:{port}/0"


async def wait_for_redis(url: str) -> None:
    client: Redis = Redis.from_url(url)
    try:
        for _ in range(500):
            try:
                await client.ping()
                return
            except (RedisError, OSError):
                await asyncio.sleep(0.02)
        raise SystemExit(f"redis-server at {url} did not answer")
    finally:
        await client.aclose()


def database_urls() -> tuple[str, str, str]:
    """Return the admin DSN, a new database's name, and its SQLAlchemy URL."""
    parts = urlsplit(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    admin = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
    name = f"arqm_bench_outbox_{uuid.uuid4().hex[:8]}"
    url = urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{name}", parts.query, ""))
    return admin, name, url


async def admin_execute(admin: str, statement: str) -> None:
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


async def enqueue_cost(engine: AsyncEngine, outbox: Outbox, operations: int) -> dict[str, list[float]]:
    """Time both ways of writing an order and enqueueing its job, interleaved, *operations* times each."""
    sessions = async_sessionmaker(engine)
    timings: dict[str, list[float]] = {"outbox (commit included)": [], "commit, then enqueue": []}
    for n in range(operations):
        began = time.perf_counter()
        async with sessions() as session, session.begin():
            await session.execute(insert(orders).values(note=f"o-{n}"))
            await outbox.enqueue(Ship(order=f"o-{n}"), session=session)
        timings["outbox (commit included)"].append(time.perf_counter() - began)

        began = time.perf_counter()
        async with sessions() as session, session.begin():
            await session.execute(insert(orders).values(note=f"p-{n}"))
        await outbox.mediator.enqueue(Ship(order=f"p-{n}"))
        timings["commit, then enqueue"].append(time.perf_counter() - began)
    return timings


async def relay_lag(
    engine: AsyncEngine, outbox: Outbox, redis_url: str, seconds: float, prefix: str
) -> list[float]:
    """Commit RATE transactions per second for *seconds*; return each job's commit -> in Redis time (ms)."""
    sessions = async_sessionmaker(engine)
    committed: dict[str, float] = {}

    async def commit(n: int) -> None:
        job_id = f"{prefix}-{n}"
        async with sessions() as session:
            await session.execute(insert(orders).values(note=job_id))
            await outbox.enqueue(Ship(order=job_id), session=session, job_id=job_id)
            # From when COMMIT is sent: once it returns, this busy loop may take a while to note the time,
            # and the relay, woken at the commit itself, may have pushed the job already.
            committed[job_id] = time.time() * 1000
            await session.commit()

    count = int(seconds * RATE)
    start = time.monotonic() + 0.5
    tasks = []
    for n in range(count):
        delay = start + n / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(commit(n)))
    await asyncio.gather(*tasks)
    client: Redis = Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 30
        ids = list(committed)
        scores = await client.zmscore(f"arq:queue:{QUEUE}", ids)
        while any(score is None for score in scores) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            scores = await client.zmscore(f"arq:queue:{QUEUE}", ids)
    finally:
        await client.aclose()
    missing = sum(score is None for score in scores)
    if missing:
        raise SystemExit(f"{missing} of {count} committed jobs never reached Redis")
    return [
        float(score) - committed[job_id]
        for job_id, score in zip(ids, scores, strict=True)
        if score is not None
    ]


async def run(seconds: float, operations: int) -> None:
    # No worker runs here: the producer's warning that none serves the queue is expected.
    logging.getLogger("arq_mediator.producer").setLevel(logging.ERROR)
    admin, name, url = database_urls()
    await admin_execute(admin, f'CREATE DATABASE "{name}"')
    directory = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    redis_process, redis_url = start_redis(directory)
    relay: asyncio.subprocess.Process | None = None
    engine = create_async_engine(url, pool_size=20, max_overflow=20)
    try:
        await wait_for_redis(redis_url)
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        writer = build(redis_url)
        outbox = Outbox(writer, jobs_table)
        async with writer:
            timings = await enqueue_cost(engine, outbox, operations)
            async with engine.begin() as connection:  # the cost run's rows are not the lag run's
                await connection.execute(jobs_table.delete())
            log = (directory / "relay.log").open("wb")
            command = ["-m", "arq_mediator", "relay", "tests.benchmarks.bench_outbox:mediator"]
            relay = await asyncio.create_subprocess_exec(
                sys.executable,
                *command,
                *("--database-url", url, "--table", TABLE),
                cwd=ROOT,
                env={**os.environ, REDIS_ENV: redis_url},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            # A warm-up second: the relay process imports, connects and LISTENs meanwhile.
            await relay_lag(engine, outbox, redis_url, 1.0, "warm-up")
            lags = await relay_lag(engine, outbox, redis_url, seconds, "lag")
    finally:
        if relay is not None:
            relay.terminate()
            await relay.wait()
        await engine.dispose()
        redis_process.terminate()
        redis_process.wait(timeout=30)
        await admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(directory, ignore_errors=True)

    print(f"1. one transaction writing an order and enqueueing its job ({operations} each, PostgreSQL):")
    print(f"   {'variant':28} {'p50 ms':>8} {'p99 ms':>8}")
    medians = {}
    for variant, values in timings.items():
        medians[variant] = statistics.median(values)
        print(f"   {variant:28} {medians[variant] * 1000:8.2f} {percentile(values, 0.99) * 1000:8.2f}")
    ratio = medians["outbox (commit included)"] / medians["commit, then enqueue"]
    print(f"   outbox / plain: {ratio:.2f}x")
    p50, p99 = statistics.median(lags), percentile(lags, 0.99)
    verdict = "ok" if p50 < 20 else "MISS"
    print(
        f"2. relay lag, commit -> in Redis, {len(lags)} commits at {RATE}/s, relay process woken by NOTIFY:"
    )
    print(f"   p50 {p50:.1f} ms (target < 20 ms: {verdict}), p99 {p99:.1f} ms, max {max(lags):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the 200 commits/s run")
    parser.add_argument("--ops", type=int, default=500, help="transactions per variant in part 1")
    arguments = parser.parse_args()
    asyncio.run(run(arguments.seconds, arguments.ops))


if __name__ == "__main__":
    main()
