"""What the platform asks of the API: which process answered, and whether its dependencies answer."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.response import Redirect
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from arq_mediator import ArqMediatorError, Mediator
from arq_mediator.dashboard import Authorize, allow_networks
from services.api.schemas import ContainerInfo, HealthOut
from services.settings import Settings

# A check that takes longer than this counts as down: a health probe must answer quickly.
CHECK_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """The API process's settings and when it started; routes receive it as the ``service`` dependency."""

    settings: Settings
    started_at: datetime


@get("/container-info", tags=["system"], summary="Which API process answered: role, host, runtime")
async def container_info(service: NamedDependency[ServiceInfo]) -> ContainerInfo:
    """Describe this API process, like the original's `/container-info`."""
    return ContainerInfo(
        role="api",
        service_name=service.settings.service_name,
        machine_name=socket.gethostname(),
        cpu_count=os.cpu_count() or 1,
        python_version=platform.python_version(),
        pid=os.getpid(),
        started_at=service.started_at,
        uptime_seconds=round((datetime.now(UTC) - service.started_at).total_seconds(), 3),
    )


def _down(error: BaseException) -> str:
    # The first line only: SQLAlchemy appends a background link, and nobody wants a traceback here.
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"down: {reason}"


async def _check_redis(mediator: NamedDependency[Mediator]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await mediator.ping()
    except (RedisError, OSError, ArqMediatorError, TimeoutError) as error:
        return _down(error)
    return "ok"


async def _check_database(mediator: NamedDependency[Mediator]) -> str:
    try:
        engine: AsyncEngine = mediator.resources[AsyncEngine]
        async with asyncio.timeout(CHECK_TIMEOUT), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, KeyError, TimeoutError) as error:
        return _down(error)
    return "ok"


@get(
    "/health",
    tags=["system"],
    summary="Check Redis and the database",
    description="200 when both answer; 503 naming what is down.",
    responses={
        HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
            data_container=HealthOut, description="Redis or the database (or both) is down"
        )
    },
)
async def health(mediator: NamedDependency[Mediator]) -> Response[HealthOut]:
    """Ping Redis and run ``SELECT 1`` on the database, concurrently."""
    redis, database = await asyncio.gather(_check_redis(mediator), _check_database(mediator))
    healthy = redis == database == "ok"
    body = HealthOut(status="ok" if healthy else "unavailable", redis=redis, database=database)
    return Response(body, status_code=HTTP_200_OK if healthy else HTTP_503_SERVICE_UNAVAILABLE)


DASHBOARD_PATH = "/dashboard"


def dashboard_access(settings: Settings) -> Authorize | None:
    """Return who may open the dashboard: loopback, plus the peers of ``DASHBOARD_ALLOW``'s networks."""
    if not settings.dashboard_networks:
        return None  # the dashboard's own rule: loopback peers only
    return allow_networks("127.0.0.0/8", "::1/128", *settings.dashboard_networks)


@get("/hangfire", include_in_schema=False)
async def hangfire_redirect() -> Redirect:
    """Send the original's dashboard path (Hangfire's) to the job dashboard."""
    return Redirect(f"{DASHBOARD_PATH}/")


@get("/swagger", include_in_schema=False)
async def swagger_redirect() -> Redirect:
    """Send the original's Swagger UI path to ours."""
    return Redirect("/schema/swagger")
