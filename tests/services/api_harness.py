"""What the API tests run beside the app: a worker standing in for a worker process, and a Redis to stop."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
from litestar import Litestar
from redis.asyncio import Redis
from services.api.app import create_app
from services.db import OUTBOX
from services.demo.handlers import build_mediator
from services.settings import Settings
from sqlalchemy import delete, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from arq_mediator import Mediator, ResultRecord, Worker
from arq_mediator.outbox import Outbox, OutboxRelay
from tests.jobs.conftest import running_worker as running_worker_on
from tests.jobs.waiting import FAST
from tests.processes import free_port, stop_by_pid

# Every demo queue, in the general worker's priority order.
ALL_QUEUES = ("critical", "default", "emails", "reports", "cleanup")


@asynccontextmanager
async def running_worker(
    settings: Settings, *, name: str = "test-worker", queues: tuple[str, ...] = ALL_QUEUES
) -> AsyncIterator[Worker]:
    """Run a worker of its own mediator (as a worker process would) for the block; stop and drain it after."""
    mediator = build_mediator(settings)
    async with mediator, running_worker_of(mediator, name=name, queues=queues) as worker:
        yield worker


@asynccontextmanager
async def running_worker_of(
    mediator: Mediator, *, name: str = "test-worker", queues: tuple[str, ...] = ALL_QUEUES
) -> AsyncIterator[Worker]:
    """Run a worker of the (open) *mediator* in this event loop for the block; stop and drain it after.

    It relays the demo's outbox, when the mediator has one, as a worker process does (polling often:
    SQLite has no NOTIFY).
    """
    outbox = mediator.resources.get(Outbox)
    relay = None if outbox is None else OutboxRelay(outbox, poll_interval=0.1)
    async with running_worker_on(
        mediator, queues=list(queues), max_jobs=20, name=name, relay=relay, **FAST
    ) as worker:
        yield worker


async def empty_outbox(database_url: str) -> None:
    """Delete every row of the demo's outbox table at *database_url*, when the table exists."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            if await connection.run_sync(lambda sync: inspect(sync).has_table(OUTBOX.name)):
                await connection.execute(delete(OUTBOX))
    finally:
        await engine.dispose()


def on_redis(settings: Settings, redis_url: str) -> Settings:
    """Return the API's settings for a Redis of the test's own: no simulated work, no email failures."""
    return Settings(
        redis_url=redis_url,
        database_url=settings.database_url,
        work_scale=0.0,
        email_failure_rate=0.0,
        service_name="api",
    )


async def result_records(redis_url: str) -> list[ResultRecord]:
    """Return every finished job's result record in the Redis database at *redis_url*."""
    client: Redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match="arq:result:*", count=1000)]
        raws = await client.mget(keys) if keys else []
    finally:
        await client.aclose()
    return [ResultRecord.model_validate_json(raw) for raw in raws if raw is not None]


async def keys_in(redis_url: str) -> int:
    """Return how many keys the Redis database at *redis_url* holds."""
    client: Redis = Redis.from_url(redis_url)
    try:
        return int(await client.dbsize())
    finally:
        await client.aclose()


@dataclass(frozen=True, slots=True)
class PrivateRedis:
    """A redis-server of the test's own, which the test may stop."""

    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        stop_by_pid(self.process)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    """Start a throwaway redis-server on a free port (never the shared one); stop it by its PID after."""
    binary = shutil.which("redis-server")
    assert binary is not None, "these tests need redis-server on PATH"
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = PrivateRedis(url=f"redis://127.0.0.1:{port}/0", process=process)
    try:
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            assert process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, f"redis-server did not answer on port {port} within 10s"
            time.sleep(0.02)
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def api_client(
    settings: Settings, *, peer: tuple[str, int] = ("127.0.0.1", 123)
) -> AsyncIterator[httpx.AsyncClient]:
    """Serve the API app on *settings* to an HTTP client (at socket address *peer*) for the block, its
    lifespan open, in this loop.

    Not Litestar's ``AsyncTestClient``: that runs the app on a thread of its own and blocks this event loop
    for each request, so a worker running here could not take a job while a request waits for its result.
    """
    app = create_app(settings)
    # httpx types the ASGI callable loosely (plain dicts); Litestar's is typed precisely, and compatible.
    transport = httpx.ASGITransport(app=cast("Any", app), client=peer)
    async with (
        _lifespan_of(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield client


@asynccontextmanager
async def _lifespan_of(app: Litestar) -> AsyncIterator[None]:
    """Hold *app*'s lifespan open in a task of its own, which enters and leaves it, as a server would.

    pytest-asyncio may set a fixture up and tear it down in different tasks, and the lifespan's task group
    must be left by the task that entered it.
    """
    started = asyncio.Event()
    stop = asyncio.Event()

    async def hold() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold(), name="API lifespan")
    ready = asyncio.create_task(started.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        ready.cancel()
        await task  # raises what the start-up raised
    try:
        yield
    finally:
        stop.set()
        await task
