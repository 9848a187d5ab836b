"""Fault injection with real processes: every test gets a redis-server of its own, free to break.

The worker processes run `tests.jobs.process_app` through the command line, exactly as users run theirs,
and connect to that private server; the test process enqueues and inspects through its own mediator.
Everything a test starts is stopped by PID when it ends, however it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from arq_mediator import Mediator
from tests.conftest import StartRedisServer
from tests.jobs import process_app
from tests.jobs.worker_processes import RedisServer, Workers, wait_until
from tests.processes import ManagedProcess, ManagedProcesses


@pytest.fixture
async def server(redis_servers: StartRedisServer) -> RedisServer:
    """Return a private redis-server, up and answering; stopped when the test ends."""
    return await redis_servers()


@pytest.fixture
def workers(server: RedisServer, tmp_path: Path) -> Iterator[Workers]:
    """Start worker processes on the private server; every one is stopped when the test ends."""
    processes = ManagedProcesses(tmp_path)
    try:
        yield Workers(server.url, processes)
    finally:
        processes.stop_all()


@pytest.fixture
async def app(server: RedisServer) -> AsyncIterator[Mediator]:
    """Return an open mediator on the private server, with `process_app`'s handlers to enqueue with."""
    async with process_app.build(server.url) as mediator:
        yield mediator


async def stays_up(*processes: ManagedProcess, seconds: float) -> None:
    """Watch *processes* for *seconds*: fail the moment one exits. What is asserted is survival over time."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for process in processes:
            assert process.process.poll() is None, f"{process.name} exited:\n{process.output()}"
        await asyncio.sleep(0.05)


async def printed(process: ManagedProcess, text: str, timeout: float = 10.0) -> None:
    """Wait until *process* has printed *text*."""

    async def found() -> bool:
        return text in process.output()

    await wait_until(found, f"{process.name} to print {text!r}", timeout=timeout, diagnose=process.output)
