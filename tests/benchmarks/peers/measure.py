"""Measuring one variant on its own redis-server: drains, latencies, memory, CPU, the body-only ceiling."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.processes import stop_by_pid

from .system import PeerClient, Variant
from .workload import (
    CONCURRENCY,
    DUMP_KEY,
    ENDS_KEY,
    FAST_ENV,
    REDIS_URL_ENV,
    SLEEP_SECONDS,
    STARTS_KEY,
    TALLY_KEY,
    awaited,
    body,
)

ROOT = Path(__file__).resolve().parents[3]
POLL = 0.02  # how often the parent looks at the tallies
PHASE_TIMEOUT = 180.0  # the longest one drain or wait may take before the run fails
STOP_TIMEOUT = 20.0
# Enqueue -> start and -> result samples are taken one job at a time, each after a random pause of up to
# this, so arrivals fall at random phases of a polling worker, as real ones do.
LATENCY_GAP = 0.02
LATENCY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Plan:
    """How much of everything one run measures."""

    jobs: int  # per drain of the round-trip body
    body_jobs: int  # per drain of the no-op and the sleep body
    slow_jobs: int  # at most, per drain, for variants that poll at 0.5 s (arq's defaults: ~200 jobs/s)
    latency_samples: int
    slow_latency_samples: int  # for variants that poll at 0.5 s
    warmup: int
    steady_rate: float  # jobs/s
    steady_seconds: float


def p50(values: Sequence[float]) -> float:
    """Return the median."""
    return statistics.median(values)


def p99(values: Sequence[float]) -> float:
    """Return the 99th percentile (inclusive method, so small samples give a value within them)."""
    return statistics.quantiles(values, n=100, method="inclusive")[98]


class RedisServerProcess:
    """A private redis-server on a free port, no persistence; stopped by its PID."""

    def __init__(self, directory: Path, port: int) -> None:
        binary = os.environ.get("BENCH_REDIS_SERVER") or shutil.which("redis-server")
        if binary is None:
            raise SystemExit("no redis-server on PATH: install one or set BENCH_REDIS_SERVER to its path")
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        directory.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(directory)]
        with (directory / "redis-server.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        """Wait until the server answers PING."""
        client: Redis = Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    await client.ping()
                    return
                except (RedisError, OSError):
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise SystemExit(f"redis-server on port {self.port} did not start") from None
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def stop(self) -> None:
        """Stop the server by its PID."""
        stop_by_pid(self.process)


class WorkerProcess:
    """One worker process of a variant, its output in a log file; stopped by its PID."""

    def __init__(self, variant: Variant, url: str, log_path: Path) -> None:
        self.variant = variant
        self.log_path = log_path
        env = dict(os.environ, **{REDIS_URL_ENV: url, FAST_ENV: "1" if variant.fast else "0"})
        with log_path.open("wb") as log:
            # A session of its own: taskiq's and streaq's CLIs start children, which a stop reaches too.
            self.process = subprocess.Popen(
                list(variant.command),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def failure(self, what: str) -> RuntimeError:
        """Describe a failure while waiting for *what*, with the tail of the worker's log."""
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        state = "still running" if self.process.poll() is None else f"exited with {self.process.returncode}"
        return RuntimeError(f"{self.variant.name} worker ({state}) failed {what}; {self.log_path}:\n{tail}")

    def terminate(self) -> None:
        """Ask the worker's process group to stop (SIGTERM), as a deployment would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def wait(self) -> None:
        """Wait for the stop; kill the process group if it lingers."""
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass(frozen=True)
class Drain:
    """A drain's throughput over the span all its workers were running, and worker CPU per job."""

    rate: float
    cpu_per_job: float


class VariantBench:
    """Measures one variant on its own server, through its client and its worker processes."""

    def __init__(self, variant: Variant, url: str, plan: Plan, log_dir: Path) -> None:
        self.variant = variant
        self.url = url
        self.plan = plan
        self.log_dir = log_dir
        self.control: Redis = Redis.from_url(url)
        self.client: PeerClient = variant.client(url)
        self.started = 0
        self.jobs = min(plan.jobs, plan.slow_jobs) if variant.slow_polls else plan.jobs
        self.body_jobs = min(plan.body_jobs, plan.slow_jobs) if variant.slow_polls else plan.body_jobs

    async def measure(self) -> dict[str, float]:
        """Run every measure; return them by name (seconds, bytes, jobs/s)."""
        found: dict[str, float] = {}
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.control.aclose)
            await self.client.open()
            stack.push_async_callback(self.client.close)
            await self.reset()
            # Memory is measured at the full count for every variant: fewer jobs would weigh the server's
            # fixed costs (scripts, buffers) more.
            before = await self.used_memory()
            await self.client.preload("roundtrip", self.plan.jobs)
            found["memory_per_job"] = (await self.used_memory() - before) / self.plan.jobs
            if self.jobs != self.plan.jobs:
                await self.reset()
                await self.client.preload("roundtrip", self.jobs)
            with self.workers(1) as workers:
                redis_cpu = await self.redis_cpu()
                drain = await self.drain(workers, self.jobs)
                found["redis_cpu_per_job"] = (await self.redis_cpu() - redis_cpu) / self.jobs
                found["drain"], found["cpu_per_job"] = drain.rate, drain.cpu_per_job
                found.update(await self.latencies(workers))
            for kind, name in (("noop", "drain_noop"), ("sleep", "drain_sleep")):
                await self.reset()
                await self.client.preload(kind, self.body_jobs)
                with self.workers(1) as workers:
                    found[name] = (await self.drain(workers, self.body_jobs)).rate
            await self.reset()
            await self.client.preload("roundtrip", self.jobs)
            with self.workers(2) as workers:
                redis_cpu = await self.redis_cpu()
                found["drain_two"] = (await self.drain(workers, self.jobs)).rate
                found["redis_cpu_two"] = (await self.redis_cpu() - redis_cpu) / self.jobs
                found.update(await self.steady(workers))
            await self.reset()
        return found

    async def reset(self) -> None:
        """Empty the variant's server and let the client recreate what its system expects."""
        await self.control.flushall()
        await self.client.after_flush()

    async def redis_cpu(self) -> float:
        """Return the CPU seconds the server used so far (user and system; the kernel counts in ticks)."""
        info: dict[str, Any] = await self.control.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    async def used_memory(self) -> float:
        """Return the server's used_memory in bytes."""
        info: dict[str, Any] = await self.control.info("memory")
        return float(info["used_memory"])

    @contextmanager
    def workers(self, count: int) -> Iterator[list[WorkerProcess]]:
        """Run *count* worker processes for the block; stop them after, whatever happens."""
        with ExitStack() as stack:
            started: list[WorkerProcess] = []
            for _ in range(count):
                self.started += 1
                log = self.log_dir / f"{self.variant.name}-{self.started:02d}.log"
                started.append(WorkerProcess(self.variant, self.url, log))
            stack.callback(self._stop, started)
            yield started

    @staticmethod
    def _stop(workers: list[WorkerProcess]) -> None:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait()

    async def _tallies(self, key: str) -> dict[str, Any]:
        raw: dict[bytes, bytes] = await awaited(self.control.hgetall(key))
        return {pid.decode(): json.loads(value) for pid, value in raw.items()}

    async def _until(self, workers: list[WorkerProcess], what: str, done: Any) -> None:
        """Poll *done* (an async predicate) until true; fail with a worker's log if one dies or times out."""
        deadline = time.monotonic() + PHASE_TIMEOUT
        while not await done():
            for worker in workers:
                if worker.process.poll() is not None:
                    raise worker.failure(what)
            if time.monotonic() > deadline:
                raise workers[0].failure(what)
            await asyncio.sleep(POLL)

    async def drain(self, workers: list[WorkerProcess], jobs: int) -> Drain:
        """Wait for the workers to run the *jobs* queued; time them from when the last of them started."""
        tallies: dict[str, Any] = {}

        async def drained() -> bool:
            tallies.update(await self._tallies(TALLY_KEY))
            return bool(sum(tally["count"] for tally in tallies.values()) >= jobs)

        await self._until(workers, f"to drain {jobs} jobs", drained)
        await self.control.set(DUMP_KEY, f"{time.time()!r}")
        ends: dict[str, list[float]] = {}

        async def dumped() -> bool:
            ends.update(await self._tallies(ENDS_KEY))
            return set(ends) >= set(tallies)

        await self._until(workers, "to report its job end times", dumped)
        await self.control.delete(TALLY_KEY, ENDS_KEY, DUMP_KEY)
        # A second worker may start a moment after the first: count only the span both were running.
        window_start = max(tally["first_start"] for tally in tallies.values())
        finished = sorted(end for worker_ends in ends.values() for end in worker_ends)
        in_window = [end for end in finished if end >= window_start]
        span = finished[-1] - window_start
        cpu = sum(tally["cpu"] for tally in tallies.values())
        return Drain(rate=len(in_window) / span, cpu_per_job=cpu / sum(t["count"] for t in tallies.values()))

    async def latencies(self, workers: list[WorkerProcess]) -> dict[str, float]:
        """Time one job at a time on an idle worker: enqueue -> start, and enqueue -> result returned."""
        samples = self.plan.slow_latency_samples if self.variant.slow_polls else self.plan.latency_samples
        pickups: list[float] = []
        results: list[float] = []
        for index in range(self.plan.warmup + samples):
            await asyncio.sleep(random.uniform(0, LATENCY_GAP))
            await self.control.delete(STARTS_KEY)
            sent = time.time()
            wait = await self.client.enqueue("roundtrip", sent)
            try:
                await wait(LATENCY_TIMEOUT)
            except TimeoutError:
                raise workers[0].failure(f"to return a result within {LATENCY_TIMEOUT} s") from None
            returned = time.time()
            started = await awaited(self.control.lpop(STARTS_KEY))
            if started is None:
                raise workers[0].failure("to record a job's start")
            if index >= self.plan.warmup:
                pickups.append(float(started))
                results.append(returned - sent)
        return {"pickup_p50": p50(pickups), "result_p50": p50(results), "result_p99": p99(results)}

    async def steady(self, workers: list[WorkerProcess]) -> dict[str, float]:
        """Enqueue at a steady rate one at a time; return enqueue -> start p50 and p99."""
        await self.control.delete(STARTS_KEY)
        count = round(self.plan.steady_rate * self.plan.steady_seconds)
        began = time.perf_counter()
        for index in range(count):
            pause = began + index / self.plan.steady_rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            await self.client.enqueue("roundtrip", time.time())

        async def all_started() -> bool:
            started: int = await awaited(self.control.llen(STARTS_KEY))
            return started >= count

        what = f"to start {count} jobs enqueued at {self.plan.steady_rate:g}/s"
        await self._until(workers, what, all_started)
        delays = [float(value) for value in await awaited(self.control.lrange(STARTS_KEY, 0, -1))]
        return {"steady_p50": p50(delays), "steady_p99": p99(delays)}


async def ceiling(url: str, jobs: int) -> dict[str, float]:
    """Run the round-trip body *jobs* times at concurrency 20 with no queue; return jobs/s and CPU per job."""
    redis: Redis = Redis.from_url(url)
    remaining = iter(range(jobs))

    async def runner() -> None:
        for _ in remaining:
            now = time.time()
            await body("roundtrip", now, now, redis)

    try:
        await redis.ping()
        cpu, began = time.process_time(), time.perf_counter()
        await asyncio.gather(*(runner() for _ in range(CONCURRENCY)))
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        await redis.flushall()
    finally:
        await redis.aclose()
    return {"drain": jobs / wall, "cpu_per_job": cpu / jobs, "sleep_ideal": CONCURRENCY / SLEEP_SECONDS}
