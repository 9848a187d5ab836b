"""Worker processes and private Redis servers for tests that need real OS processes, stopped by PID.

`Workers` starts ``python -m arq_mediator worker`` processes running `tests.jobs.process_app`;
`RedisServer` runs a redis-server of the test's own on a free port, which a test may stop, pause or
reconfigure without touching the shared one.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arq_mediator import JobHandle, Mediator
from tests.processes import ManagedProcess, ManagedProcesses, free_port, stop_by_pid

from . import process_app

T = TypeVar("T")
APP = "tests.jobs.process_app:mediator"


async def wait_until(
    check: Callable[[], Awaitable[T]],
    what: str,
    *,
    timeout: float = 10.0,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Poll *check* until it returns something truthy, and return that; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            details = f"\n{diagnose()}" if diagnose is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{details}")
        await asyncio.sleep(0.02)


@dataclass
class Workers:
    """Starts worker processes on the test's Redis (or another) and stops every one of them at the end."""

    redis_url: str
    processes: ManagedProcesses

    def start(
        self,
        name: str,
        queues: Sequence[str],
        *,
        max_jobs: int = 4,
        lease: float = 2.0,
        heartbeat: float = 0.4,
        grace: float = 5.0,
        redis_url: str | None = None,
    ) -> ManagedProcess:
        """Start a worker process named *name* on *queues*; it connects to *redis_url* or the test's Redis."""
        env = {**os.environ, process_app.URL_ENV: redis_url or self.redis_url, "PYTHONUNBUFFERED": "1"}
        arguments = ["-m", "arq_mediator", "worker", APP, "--queues", ",".join(queues), "--name", name]
        arguments += ["--max-jobs", str(max_jobs), "--lease", str(lease)]
        arguments += ["--heartbeat", str(heartbeat), "--grace", str(grace)]
        return self.processes.start(f"worker-{name}", arguments, env)

    def logs(self) -> str:
        """Return every worker's output, for failure messages."""
        return self.processes.logs()


async def wait_for_workers(
    mediator: Mediator, *names: str, diagnose: Callable[[], str] | None = None
) -> None:
    """Wait until every worker in *names* has a live heartbeat entry."""

    async def up() -> bool:
        live = {worker.name for worker in (await mediator.stats()).workers}
        return set(names) <= live

    await wait_until(up, f"heartbeats of {', '.join(names)}", timeout=15.0, diagnose=diagnose)


async def results(
    handles: Sequence[JobHandle[str]], timeout: float, diagnose: Callable[[], str] | None = None
) -> list[str]:
    """Wait for every handle's value, one after another, all within *timeout* seconds.

    Awaiting many at once is the business of `test_concurrent_result_waits_on_a_fresh_mediator_all_resolve`;
    here a failure should point at the workers, so the results are awaited the plainest way.
    """
    try:
        async with asyncio.timeout(timeout):
            return [await handle.result() for handle in handles]
    except TimeoutError:
        details = f"\n{diagnose()}" if diagnose is not None else ""
        raise AssertionError(f"jobs not all finished within {timeout}s{details}") from None


@dataclass
class RedisServer:
    """A private redis-server on its own port, with an append-only file so its data survives a restart."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # More redis-server options, e.g. ("--databases", "4").
    options: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """Return the server's URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server on its port and directory (reloading what it stored there)."""
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--dir",
            str(self.directory),
            *self.options,
        ]
        with (self.directory / "redis-server.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        """Wait until the server answers PING (with its data loaded)."""
        client: Redis = Redis.from_url(self.url)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except (RedisError, OSError):
                return False

        try:
            await wait_until(answers, f"redis-server on port {self.port}", timeout=10.0)
        finally:
            await client.aclose()

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM (it writes its append-only file), SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is not None:
            stop_by_pid(process)
