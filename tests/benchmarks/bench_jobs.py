"""Benchmark: raw arq against arq-mediator for background jobs, in one run on one machine.

Measured, interleaving the two where possible (the machine may be shared and noisy):

1. enqueue one job at a time (jobs/s): ``arq_redis.enqueue_job("noop")`` against
   ``mediator.enqueue(NoopRequest())``;
2. ``mediator.enqueue_many`` of 1,000 requests (jobs/s) vs raw arq one at a time;
3. one worker process (max_jobs=20) draining pre-enqueued no-op jobs (jobs/s), timed from the first job's
   start to the last job's end as the handlers record them, so process start-up is left out; arq-mediator
   drains with its job history on (the default) and off, alternating, and the ratio is reported (the
   target: history on keeps at least 85% of history off);
4. enqueue -> handler start with an idle, warmed-up worker (p50, p99);
5. job finished -> ``result()`` returns (p50, p99).

Raw arq runs with its defaults, the baseline its users have: pickle, its CLI's per-job INFO log lines,
poll_delay 0.5 s and ``Job.result(poll_delay=0.5)``. Tuned raw arq (10 ms polls, logging off) is reported
in extra rows. The worker-side jobs are in ``jobs_app.py``.

Run from the repository root: python tests/benchmarks/bench_jobs.py [--quick] [--history-only]
(--history-only runs just the drains with history on and off, ``--runs`` times each.)
It uses database ARQM_BENCH_REDIS_DB (default 14) of REDIS_URL (default redis://127.0.0.1:6379) and
flushes it between phases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import importlib.metadata
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: import the app as the workers do, from the repository root
    sys.path.insert(0, str(ROOT))

from arq.connections import ArqRedis, create_pool  # noqa: E402
from arq.jobs import ResultNotFound  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from arq_mediator import JobNotFoundError  # noqa: E402
from tests.benchmarks import jobs_app  # noqa: E402
from tests.benchmarks.jobs_app import NoopRequest, StampRequest  # noqa: E402

SENTINEL = "bench:owner"  # set after each flush; gone means another process flushed our database
CHUNK = 250  # jobs enqueued by one side before the other side's turn
_APP = "tests.benchmarks.jobs_app"
WORKERS: dict[str, list[str]] = {
    "arq": [sys.executable, "-m", "arq", f"{_APP}.ArqSettings"],
    "arq-fast": [sys.executable, "-m", "arq", f"{_APP}.ArqFastSettings"],
    "arq-drain": [sys.executable, "-m", "arq", f"{_APP}.ArqDrainSettings"],
    "arq-drain-quiet": [
        sys.executable,
        "-c",
        f"from {_APP} import run_arq_quiet; run_arq_quiet('ArqDrainSettings')",
    ],
    "mediator": [
        sys.executable,
        "-m",
        "arq_mediator",
        "worker",
        f"{_APP}:mediator",
        "--queues",
        jobs_app.MEDIATOR_QUEUE,
        "--max-jobs",
        str(jobs_app.MAX_JOBS),
    ],
}
WORKERS["mediator-no-history"] = WORKERS["mediator"]
# Environment a kind of worker runs with besides the parent's.
ENVIRONMENTS: dict[str, dict[str, str]] = {"mediator-no-history": {"BENCH_HISTORY": "off"}}
# The drain with history on must keep at least this share of the drain without it.
HISTORY_TARGET = 0.85


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of everything to run."""

    enqueue_jobs: int
    enqueue_rounds: int
    batch: int
    batches_per_round: int
    drain_jobs: int
    drain_runs: int
    latency_rounds: int
    latency_jobs: int  # per variant per round, for arq-mediator and 10 ms raw arq
    latency_jobs_default: int  # per round for raw arq at its 0.5 s defaults (each takes ~0.75 s)
    warmup: int


FULL = Plan(
    enqueue_jobs=3000,
    enqueue_rounds=3,
    batch=1000,
    batches_per_round=4,
    drain_jobs=5000,
    drain_runs=2,
    latency_rounds=2,
    latency_jobs=100,
    latency_jobs_default=100,
    warmup=5,
)
QUICK = Plan(
    enqueue_jobs=500,
    enqueue_rounds=2,
    batch=1000,
    batches_per_round=2,
    drain_jobs=1000,
    drain_runs=1,
    latency_rounds=1,
    latency_jobs=30,
    latency_jobs_default=12,
    warmup=2,
)


# Worker processes ---------------------------------------------------------------------------------------


class WorkerProcess:
    """One worker subprocess, its output in a log file; stopped by its pid."""

    def __init__(self, kind: str, log_dir: Path, serial: int, expect: int = 0) -> None:
        self.kind = kind
        self.log_path = log_dir / f"{serial:02d}-{kind}.log"
        env = dict(os.environ, BENCH_EXPECT=str(expect), **ENVIRONMENTS.get(kind, {}))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                WORKERS[kind], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def exited(self) -> bool:
        """Return whether the process has ended."""
        return self.process.poll() is not None

    def failure(self, what: str) -> RuntimeError:
        """Describe a failure while waiting for *what*, with the tail of the worker's log."""
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        state = f"exited with {self.process.returncode}" if self.exited() else "still running"
        return RuntimeError(f"{self.kind} worker ({state}) failed {what}; {self.log_path}:\n{tail}")

    def stop(self) -> None:
        """Terminate the process (SIGTERM: both workers drain and exit), killing it if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# Measurements -------------------------------------------------------------------------------------------


class SampleLost(RuntimeError):
    """A latency sample's start record is missing or not the job's."""


@dataclass(slots=True)
class Enqueueing:
    """Enqueue rates (jobs/s) per round: raw arq and arq-mediator one at a time, and enqueue_many."""

    raw: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    batched: list[float] = field(default_factory=list)


@dataclass(slots=True)
class Drain:
    """One drain: handler-timed throughput, the worker's and the Redis server's CPU per job, and wall time
    from spawn to empty (the server's CPU counts every client's commands meanwhile: on a shared server, an
    upper bound)."""

    rate: float
    cpu_per_job: float
    wall: float
    redis_cpu_per_job: float = 0.0


@dataclass(slots=True)
class Latencies:
    """Per job: enqueue -> handler start, and handler end -> result() returns, in seconds."""

    start: list[float] = field(default_factory=list)
    result: list[float] = field(default_factory=list)


def p50(values: list[float]) -> float:
    """Return the median."""
    return statistics.median(values)


def p99(values: list[float]) -> float:
    """Return the 99th percentile (inclusive method, so small samples give a value within them)."""
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def awaited(value: Any) -> Any:
    """Await a redis-py command result (typed sync-or-async; always awaitable on the asyncio client)."""
    return await cast("Awaitable[Any]", value)


class Bench:
    """The parent side: clients for both libraries and a control client on the benchmark database."""

    def __init__(self, plan: Plan, control: Redis, arq: ArqRedis, log_dir: Path) -> None:
        self.plan = plan
        self.control = control
        self.arq = arq
        self.log_dir = log_dir
        self.spawned = 0
        self.lost = 0  # latency samples taken again after another process flushed the database
        self.mediator = jobs_app.mediator

    async def flush(self) -> None:
        """Empty the benchmark database (never database 0: jobs_app refuses it), then mark it as ours."""
        await self.control.flushdb()
        await self.control.set(SENTINEL, os.getpid())

    async def foreign_flush(self) -> str:
        """Return a warning if our mark is gone (another process flushed the database), else ''."""
        if await self.control.exists(SENTINEL):
            return ""
        await self.control.set(SENTINEL, os.getpid())
        return (
            f"; the benchmark database {jobs_app.REDIS_URL} was flushed by another process meanwhile: "
            "rerun with ARQM_BENCH_REDIS_DB set to a database nothing else uses"
        )

    async def queued(self, queue_key: str) -> int:
        """Return how many jobs are in *queue_key*."""
        count: int = await awaited(self.control.zcard(queue_key))
        return count

    async def unfinished(self, queue_key: str) -> int:
        """Return how many jobs are queued in *queue_key* or (arq-mediator's) still running."""
        queued = await self.queued(queue_key)
        if queue_key != jobs_app.MEDIATOR_QUEUE_KEY:
            return queued
        return queued + await self.queued(jobs_app.MEDIATOR_RUNNING_KEY)

    @contextlib.contextmanager
    def worker(self, kind: str, expect: int = 0) -> Iterator[WorkerProcess]:
        """Run a worker subprocess of *kind* for the block; stop it after, whatever happens."""
        self.spawned += 1
        process = WorkerProcess(kind, self.log_dir, self.spawned, expect)
        try:
            yield process
        finally:
            process.stop()

    # 1 and 2: enqueueing --------------------------------------------------------------------------------

    async def enqueue_raw(self, jobs: int) -> float:
        """Enqueue *jobs* no-op jobs one at a time with raw arq; return the seconds it took."""
        enqueue = self.arq.enqueue_job
        started = time.perf_counter()
        for _ in range(jobs):
            await enqueue("noop")
        return time.perf_counter() - started

    async def enqueue_ours(self, jobs: int) -> float:
        """Enqueue *jobs* no-op requests one at a time with arq-mediator; return the seconds it took."""
        enqueue = self.mediator.enqueue
        started = time.perf_counter()
        for _ in range(jobs):
            await enqueue(NoopRequest())
        return time.perf_counter() - started

    async def enqueue_batch(self, size: int) -> float:
        """Enqueue *size* no-op requests in one `enqueue_many`; return the seconds it took."""
        requests = [NoopRequest() for _ in range(size)]
        started = time.perf_counter()
        await self.mediator.enqueue_many(requests)
        return time.perf_counter() - started

    async def enqueueing(self) -> Enqueueing:
        """Time enqueueing in rounds, raw arq and arq-mediator alternating every `CHUNK` jobs.

        The fine interleaving makes both sides see the same noise; a round's rate is its jobs over the
        summed time of its chunks. The batches are spread over each round the same way.
        """
        plan = self.plan
        await self.flush()
        await self.enqueue_raw(200)  # warm-up: connections, script loading, first-call caches
        await self.enqueue_ours(200)
        await self.enqueue_batch(plan.batch)
        await self.flush()
        found = Enqueueing()
        chunks = max(plan.enqueue_jobs // CHUNK, 1)
        batch_every = max(chunks // plan.batches_per_round, 1)
        for _ in range(plan.enqueue_rounds):
            gc.collect()
            raw = ours = batched = 0.0
            batches = 0
            for chunk in range(chunks):
                if chunk % 2:
                    ours += await self.enqueue_ours(CHUNK)
                    raw += await self.enqueue_raw(CHUNK)
                else:
                    raw += await self.enqueue_raw(CHUNK)
                    ours += await self.enqueue_ours(CHUNK)
                if chunk % batch_every == batch_every - 1 and batches < plan.batches_per_round:
                    batched += await self.enqueue_batch(plan.batch)
                    batches += 1
            await self._check_queued(jobs_app.ARQ_QUEUE, chunks * CHUNK)
            await self._check_queued(jobs_app.MEDIATOR_QUEUE_KEY, chunks * CHUNK + batches * plan.batch)
            await self.flush()
            found.raw.append(chunks * CHUNK / raw)
            found.ours.append(chunks * CHUNK / ours)
            found.batched.append(batches * plan.batch / batched)
        return found

    async def _check_queued(self, queue_key: str, expected: int) -> None:
        found = await self.queued(queue_key)
        if found != expected:
            warning = await self.foreign_flush()
            raise RuntimeError(f"{queue_key} holds {found} jobs after enqueueing {expected}{warning}")

    # 3: draining ----------------------------------------------------------------------------------------

    async def preload(self, kind: str, jobs: int) -> str:
        """Queue *jobs* no-op jobs for a worker of *kind*; return the queue's key."""
        if kind.startswith("mediator"):
            producer = jobs_app.mediator if kind == "mediator" else jobs_app.mediator_without_history
            for offset in range(0, jobs, 1000):
                await producer.enqueue_many([NoopRequest() for _ in range(min(1000, jobs - offset))])
            queue_key = jobs_app.MEDIATOR_QUEUE_KEY
        else:
            for _ in range(jobs):
                await self.arq.enqueue_job("noop")
            queue_key = jobs_app.ARQ_QUEUE
        if await self.queued(queue_key) != jobs:
            raise RuntimeError(f"preloading {jobs} jobs into {queue_key} failed{await self.foreign_flush()}")
        return queue_key

    async def drain(self, kind: str) -> Drain:
        """Pre-enqueue the drain's jobs, start one worker, and time it through them all."""
        jobs = self.plan.drain_jobs
        await self.flush()
        queue_key = await self.preload(kind, jobs)
        deadline = time.monotonic() + 300
        redis_cpu = await self.redis_cpu()
        with self.worker(kind, expect=jobs) as worker:
            spawned = time.time()
            while True:
                reply = await awaited(self.control.blpop([jobs_app.DRAINED_KEY], timeout=1))
                if reply is not None:
                    break
                if warning := await self.foreign_flush():
                    raise RuntimeError(f"{kind}: the drain's jobs vanished{warning}")
                if worker.exited() or time.monotonic() > deadline:
                    reply = await awaited(self.control.lpop(jobs_app.DRAINED_KEY))
                    if reply is None:
                        raise worker.failure(f"to drain {jobs} jobs")
                    reply = (jobs_app.DRAINED_KEY, reply)
                    break
            while await self.unfinished(queue_key) > 0:  # the last results are being written
                if time.monotonic() > deadline:
                    raise worker.failure("to empty its queue")
                await asyncio.sleep(0.005)
            emptied = time.time()
        redis_cpu = await self.redis_cpu() - redis_cpu
        report = json.loads(reply[1])
        results = 0
        async for _ in self.control.scan_iter(match="arq:result:*", count=1000):
            results += 1
        if report["count"] != jobs or results != jobs:
            raise RuntimeError(
                f"{kind}: ran {report['count']} and kept {results} results of {jobs} jobs"
                f"{await self.foreign_flush()}"
            )
        await self.flush()
        return Drain(
            rate=jobs / (report["last_end"] - report["first_start"]),
            cpu_per_job=report["cpu"] / jobs,
            wall=emptied - spawned,
            redis_cpu_per_job=redis_cpu / jobs,
        )

    async def redis_cpu(self) -> float:
        """Return the CPU seconds the Redis server used so far."""
        info = await self.control.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    async def draining(self, kinds: list[str] | None = None) -> dict[str, list[Drain]]:
        """Alternate drains of raw arq (CLI defaults, then logging off) and arq-mediator (history on, off)."""
        kinds = kinds or ["arq-drain", "mediator", "mediator-no-history", "arq-drain-quiet"]
        drains: dict[str, list[Drain]] = {kind: [] for kind in kinds}
        for run in range(self.plan.drain_runs):
            for kind in reversed(kinds) if run % 2 else kinds:
                drain = await self.drain(kind)
                print(
                    f"  drain {kind:16} {drain.rate:9,.0f} jobs/s, worker CPU "
                    f"{drain.cpu_per_job * 1e6:4.0f} us/job, Redis CPU "
                    f"{drain.redis_cpu_per_job * 1e6:4.0f} us/job "
                    f"(spawn to empty queue {drain.wall:.2f} s)"
                )
                drains[kind].append(drain)
        return drains

    # 4 and 5: latency -----------------------------------------------------------------------------------

    async def stamp(self, kind: str, tag: str, result_poll: float, timeout: float) -> tuple[float, float]:
        """Enqueue one stamp job and await its result; return (start - enqueue, return - end) in seconds."""
        enqueued = time.time()
        if kind == "mediator":
            handle = await self.mediator.enqueue(StampRequest(tag=tag))
            ended = await handle.result(timeout=timeout)
        else:
            job = await self.arq.enqueue_job("stamp", tag)
            if job is None:
                raise RuntimeError(f"raw arq refused job {tag}")
            ended = float(await job.result(timeout=timeout, poll_delay=result_poll))
        returned = time.time()
        raw = await awaited(self.control.lpop(jobs_app.STARTS_KEY))
        if raw is None:
            raise SampleLost(f"job {tag} finished without recording its start")
        tag_back, started = raw.decode().split()
        if tag_back != tag:
            raise SampleLost(f"expected the start of job {tag}, found {tag_back}'s")
        return float(started) - enqueued, returned - ended

    async def latency(self, kind: str, jobs: int, gap: float, result_poll: float, into: Latencies) -> None:
        """Run *jobs* stamp jobs one after another on an idle worker of *kind*, after warm-up ones.

        Each job is enqueued after the previous one's result came back and a random pause of up to *gap*
        seconds, so arrivals fall at random phases of a polling worker, as real ones do.
        """
        await self.flush()
        with self.worker(kind) as worker:
            index = 0
            while index < self.plan.warmup + jobs:
                await asyncio.sleep(random.uniform(0, gap))
                tag = f"{kind}-{index}-{self.lost}"
                try:
                    start, result = await self.stamp(kind, tag, result_poll, 60)
                except TimeoutError:
                    raise worker.failure(f"to run job {tag}") from None
                except (ResultNotFound, JobNotFoundError, SampleLost) as error:
                    # A job or its record can only vanish when something else flushed our database:
                    # take the sample again (a few times at most), and say so in the report.
                    warning = await self.foreign_flush()
                    if not warning or self.lost >= 5:
                        raise RuntimeError(f"{kind} job {tag}: {error}{warning}") from error
                    self.lost += 1
                    await self.control.delete(jobs_app.STARTS_KEY)
                    print(f"  sample {tag} lost{warning}; taking it again")
                    continue
                if index >= self.plan.warmup:
                    into.start.append(start)
                    into.result.append(result)
                index += 1
        await self.flush()

    async def latencies(self) -> dict[str, Latencies]:
        """Alternate blocks of arq-mediator, raw arq at 10 ms polls, and raw arq at its defaults."""
        plan = self.plan
        blocks = [
            ("mediator", plan.latency_jobs, 0.02, 0.0),
            ("arq-fast", plan.latency_jobs, 0.02, 0.01),
            ("arq", plan.latency_jobs_default, 0.5, 0.5),
        ]
        found = {kind: Latencies() for kind, *_ in blocks}
        for round_number in range(plan.latency_rounds):
            for kind, jobs, gap, result_poll in reversed(blocks) if round_number % 2 else blocks:
                began = time.perf_counter()
                await self.latency(kind, jobs, gap, result_poll, found[kind])
                print(f"  latency block {kind:9} {jobs} jobs in {time.perf_counter() - began:.1f} s")
        return found


# Report -------------------------------------------------------------------------------------------------


def version(distribution: str) -> str:
    """Return an installed distribution's version, or '-'."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def rate_text(value: float) -> str:
    """Spell a rate in jobs/s."""
    return f"{value:,.0f}"


def ms_text(seconds: float) -> str:
    """Spell a duration in milliseconds."""
    return f"{seconds * 1000:.2f} ms"


class Table:
    """The summary: measure, raw arq, arq-mediator, ratio, target, verdict."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []

    def throughput(self, name: str, raw: float, ours: float, target: float | None) -> None:
        """Add a jobs/s row; the ratio is ours / raw and must reach *target*."""
        ratio = ours / raw
        verdict = "" if target is None else ("ok" if ratio >= target else "MISS")
        target_text = "info" if target is None else f">= {target:g}x"
        self.rows.append((name, rate_text(raw), rate_text(ours), f"{ratio:.2f}x", target_text, verdict))

    def latency(self, name: str, raw: float, ours: float, limit_ms: float | None) -> None:
        """Add a latency row; the ratio is raw / ours, and ours must stay within *limit_ms*."""
        ratio = f"{raw / ours:.1f}x" if ours > 0 else "-"
        verdict = "" if limit_ms is None else ("ok" if ours * 1000 <= limit_ms else "MISS")
        target_text = "info" if limit_ms is None else f"<= {limit_ms:g} ms"
        self.rows.append((name, ms_text(raw), ms_text(ours), ratio, target_text, verdict))

    def cost(self, name: str, raw: float, ours: float) -> None:
        """Add a CPU-seconds-per-job row, informative; the ratio is raw / ours."""
        self.rows.append(
            (name, f"{raw * 1e6:.0f} us", f"{ours * 1e6:.0f} us", f"{raw / ours:.1f}x", "info", "")
        )

    def print(self) -> None:
        """Print the table."""
        header = ("measure", "raw arq", "arq-mediator", "ratio", "target", "")
        widths = [max(len(row[i]) for row in [header, *self.rows]) for i in range(6)]
        for row in [header, *self.rows]:
            cells = [row[0].ljust(widths[0])] + [
                cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
            ]
            print("  ".join(cells).rstrip())


async def server_version(control: Redis) -> str:
    """Return the Redis server's version."""
    info: dict[str, Any] = await control.info("server")
    return str(info.get("redis_version", "?"))


def spread(values: list[float], text: Callable[[float], str]) -> str:
    """Spell every sample of a measure, for the record of a noisy machine."""
    return ", ".join(text(value) for value in values)


async def run(plan: Plan, mode: str) -> None:
    control: Redis = Redis.from_url(jobs_app.REDIS_URL)
    arq = await create_pool(jobs_app.REDIS_SETTINGS)
    log_dir = Path(tempfile.mkdtemp(prefix="arqm-bench-"))
    began = time.perf_counter()
    print(f"arq-mediator job benchmark ({mode}), {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}; "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    print(
        f"versions: arq-mediator {version('arq-mediator')}, arq {version('arq')}, "
        f"redis-py {version('redis')}, hiredis {version('hiredis')}, pydantic {version('pydantic')}, "
        f"Redis server {await server_version(control)}"
    )
    print(f"redis: {jobs_app.REDIS_URL} (flushed between phases); worker logs: {log_dir}")
    print(
        "raw arq baseline = arq's defaults: pickle serializer, per-job INFO log lines (arq CLI), "
        "poll_delay 0.5 s, Job.result(poll_delay=0.5); tuned raw arq rows are extras"
    )
    try:
        async with jobs_app.mediator, jobs_app.mediator_without_history:
            bench = Bench(plan, control, arq, log_dir)
            print(
                f"\n[1, 2] enqueue: {plan.enqueue_rounds} rounds of {plan.enqueue_jobs:,} jobs a side, "
                f"alternating every {CHUNK}, with {plan.batches_per_round} enqueue_many batches a round"
            )
            enqueued = await bench.enqueueing()
            print(f"  raw arq one at a time     : {spread(enqueued.raw, rate_text)} jobs/s")
            print(f"  arq-mediator one at a time: {spread(enqueued.ours, rate_text)} jobs/s")
            print(
                f"  arq-mediator enqueue_many({plan.batch:,}): {spread(enqueued.batched, rate_text)} jobs/s"
            )
            print(
                f"\n[3] drain {plan.drain_jobs:,} no-op jobs, one worker, max_jobs {jobs_app.MAX_JOBS} "
                f"(raw arq: poll_delay 0.01, burst), {plan.drain_runs} run(s) each, alternating"
            )
            drains = await bench.draining()
            print(
                f"\n[4, 5] latency, idle worker: {plan.latency_rounds} round(s) of {plan.latency_jobs} jobs "
                f"({plan.latency_jobs_default} for raw arq at 0.5 s polls) after {plan.warmup} warm-up jobs"
            )
            found = await bench.latencies()
            if bench.lost:
                print(f"  warning: {bench.lost} latency sample(s) taken again after a foreign flush")
    finally:
        with contextlib.suppress(Exception):
            await control.flushdb()
        await arq.aclose()
        await control.aclose()

    table = Table()
    raw_rate, our_rate = statistics.median(enqueued.raw), statistics.median(enqueued.ours)
    table.throughput("1. enqueue one at a time (jobs/s, median round)", raw_rate, our_rate, 1.0)
    table.throughput(
        f"2. enqueue_many({plan.batch:,}) vs raw one at a time (jobs/s)",
        raw_rate,
        statistics.median(enqueued.batched),
        10.0,
    )
    raw_drain = max(drain.rate for drain in drains["arq-drain"])
    our_drain = max(drain.rate for drain in drains["mediator"])
    quiet_drain = max(drain.rate for drain in drains["arq-drain-quiet"])
    table.throughput(f"3. drain {plan.drain_jobs:,} no-op jobs (jobs/s, best)", raw_drain, our_drain, 2.0)
    table.throughput("   drain, raw arq with per-job logging off", quiet_drain, our_drain, None)
    table.cost(
        "   drain, worker CPU per job (best)",
        min(drain.cpu_per_job for drain in drains["arq-drain"]),
        min(drain.cpu_per_job for drain in drains["mediator"]),
    )
    without_history = max(drain.rate for drain in drains["mediator-no-history"])
    table.throughput("   drain, history on vs off (ours/ours)", without_history, our_drain, HISTORY_TARGET)
    default, fast, mine = found["arq"], found["arq-fast"], found["mediator"]
    table.latency("4. enqueue -> start p50", p50(default.start), p50(mine.start), 5)
    table.latency("   enqueue -> start p99", p99(default.start), p99(mine.start), 20)
    table.latency("   enqueue -> start p50, raw arq poll_delay=0.01", p50(fast.start), p50(mine.start), None)
    table.latency("   enqueue -> start p99, raw arq poll_delay=0.01", p99(fast.start), p99(mine.start), None)
    table.latency("5. finished -> result() p50", p50(default.result), p50(mine.result), 5)
    table.latency("   finished -> result() p99", p99(default.result), p99(mine.result), None)
    table.latency(
        "   finished -> result() p50, raw arq poll_delay=0.01", p50(fast.result), p50(mine.result), None
    )
    print(
        f"\nsummary ({mode}; ratio > 1 means arq-mediator is better: ours/raw for rates, raw/ours for times)"
    )
    table.print()
    print(
        f"\nload average now {' '.join(f'{load:.2f}' for load in os.getloadavg())}; "
        f"took {time.perf_counter() - began:.0f} s"
    )


async def run_history(plan: Plan) -> None:
    """Drain with history on and off, alternating, and report the ratio of their rates."""
    control: Redis = Redis.from_url(jobs_app.REDIS_URL)
    arq = await create_pool(jobs_app.REDIS_SETTINGS)
    log_dir = Path(tempfile.mkdtemp(prefix="arqm-bench-"))
    print(
        f"job history cost: drain {plan.drain_jobs:,} no-op jobs, {plan.drain_runs} run(s) each, "
        "alternating; "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{load:.2f}' for load in os.getloadavg())}"
    )
    try:
        async with jobs_app.mediator, jobs_app.mediator_without_history:
            bench = Bench(plan, control, arq, log_dir)
            drains = await bench.draining(["mediator", "mediator-no-history"])
    finally:
        with contextlib.suppress(Exception):
            await control.flushdb()
        await arq.aclose()
        await control.aclose()
    on = [drain.rate for drain in drains["mediator"]]
    off = [drain.rate for drain in drains["mediator-no-history"]]
    best = max(on) / max(off)
    median = statistics.median(on) / statistics.median(off)
    verdict = "meets" if best >= HISTORY_TARGET else "MISSES"
    print(
        f"history on / off: best {best:.2f}, median {median:.2f} "
        f"({verdict} the target of {HISTORY_TARGET:.2f} on the best runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples: a smoke run of under a minute")
    parser.add_argument(
        "--history-only", action="store_true", help="only the drains with job history on and off"
    )
    parser.add_argument("--runs", type=int, default=0, help="drain runs of each kind (default: the plan's)")
    arguments = parser.parse_args()
    plan = QUICK if arguments.quick else FULL
    if arguments.runs:
        plan = dataclasses.replace(plan, drain_runs=arguments.runs)
    if arguments.history_only:
        asyncio.run(run_history(plan))
        return
    asyncio.run(run(plan, "quick" if arguments.quick else "full"))


if __name__ == "__main__":
    main()
