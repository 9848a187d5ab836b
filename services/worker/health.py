"""The worker's optional HTTP side: ``/health`` and ``/worker-info`` for health checks, and no API routes.

It runs in the worker's event loop, so ``/worker-info`` reads the worker's live counters, and it stops when
the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
import time
from collections.abc import Awaitable, Callable, Generator
from datetime import UTC, datetime
from typing import Literal

import msgspec
import uvicorn
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.response import Response
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from arq_mediator import Mediator, Worker

# A check that takes longer than this counts as down: a health probe must answer quickly.
CHECK_TIMEOUT = 3.0


class WorkerHealth(msgspec.Struct, rename="camel"):
    """Whether the worker's dependencies answer."""

    status: Literal["ok", "unavailable"]
    redis: str
    database: str


class WorkerInfo(msgspec.Struct, rename="camel"):
    """Which worker answered: its role, host, configuration and counters."""

    role: Literal["worker"]
    service_name: str
    machine_name: str
    cpu_count: int
    python_version: str
    pid: int
    worker_name: str
    queues: list[str]
    max_concurrent_jobs: int
    started_at: datetime
    uptime_seconds: float
    running: int
    succeeded: int
    failed: int
    retried: int


async def _check(probe: Callable[[], Awaitable[object]]) -> str:
    """Return "ok" when *probe* succeeds in time, else "down: " and why."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await probe()
    except TimeoutError:
        return f"down: no answer within {CHECK_TIMEOUT:.0f}s"
    except Exception as error:
        # The first line only, as the API's /health: SQLAlchemy appends a background link.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"down: {reason}"
    return "ok"


@get("/health")
async def health(state: State) -> Response[WorkerHealth]:
    """Check Redis and the database; 503 when either is down."""
    mediator: Mediator = state.mediator

    async def ping_redis() -> None:
        await mediator.ping()

    async def ping_database() -> None:
        async with mediator.resources[AsyncEngine].connect() as connection:
            await connection.execute(text("SELECT 1"))

    redis, database = await asyncio.gather(_check(ping_redis), _check(ping_database))
    up = redis == database == "ok"
    return Response(
        WorkerHealth(status="ok" if up else "unavailable", redis=redis, database=database),
        status_code=HTTP_200_OK if up else HTTP_503_SERVICE_UNAVAILABLE,
    )


@get("/worker-info")
async def worker_info(state: State) -> WorkerInfo:
    """Describe this worker process, with its live job counters."""
    worker: Worker = state.worker
    counters = worker.counters
    return WorkerInfo(
        role="worker",
        service_name=state.service_name,
        machine_name=socket.gethostname(),
        cpu_count=os.cpu_count() or 1,
        python_version=platform.python_version(),
        pid=os.getpid(),
        worker_name=worker.name,
        queues=list(worker.settings.queues),
        max_concurrent_jobs=worker.settings.max_jobs,
        started_at=datetime.fromtimestamp(counters.started_at / 1000, UTC),
        uptime_seconds=round(time.time() - counters.started_at / 1000, 3),
        running=worker.running,
        succeeded=counters.succeeded,
        failed=counters.failed,
        retried=counters.retried,
    )


def create_health_app(worker: Worker, mediator: Mediator, service_name: str) -> Litestar:
    """Return the worker's HTTP app: the two routes above, no OpenAPI, no API routes."""
    state = State({"worker": worker, "mediator": mediator, "service_name": service_name})
    # logging_config=None: Litestar's default would reconfigure the root logger the worker logs with.
    return Litestar(
        route_handlers=[health, worker_info], state=state, openapi_config=None, logging_config=None
    )


class HealthServer(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM and SIGINT to the worker, which stops the server when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install no signal handler: uvicorn's would take the signals from the worker and re-raise them."""
        yield


def health_server(app: Litestar, host: str, port: int) -> HealthServer:
    """Return a server for *app* on *host*:*port*, quiet but for warnings."""
    return HealthServer(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
