"""The API service: a Litestar app that enqueues jobs and never runs them.

``uvicorn services.api.app:app`` serves it; ``app`` is built on first access, so importing this module
builds nothing, connects to nothing and reads no environment.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from litestar import Litestar
from litestar.di import Provide
from litestar.exceptions import ClientException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.plugins import PluginProtocol
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.plugins.pydantic import PydanticPlugin
from sqlalchemy.exc import InterfaceError, OperationalError

from arq_mediator.dashboard import DashboardPlugin
from arq_mediator.litestar import MediatorPlugin
from services.api.budget import JobBudget
from services.api.demo_routes import DistributedDemoController
from services.api.errors import (
    database_unavailable,
    explain_unreadable_body,
    log_server_errors,
    name_fields_as_sent,
)
from services.api.input_rules import check_input
from services.api.openapi import ContractJson, ContractRedoc, ContractScalar, ContractSwagger
from services.api.resource_routes import create_report, create_user, read_job, read_user
from services.api.spelling import CaseInsensitiveLitestar
from services.api.system_routes import (
    DASHBOARD_PATH,
    ServiceInfo,
    container_info,
    dashboard_access,
    hangfire_redirect,
    health,
    swagger_redirect,
)
from services.demo.handlers import build_mediator
from services.settings import Settings
from services.telemetry import configure_telemetry, correlate_logs

__all__ = ["CaseInsensitiveLitestar", "create_app"]

DESCRIPTION = """\
The API of arq-mediator's distributed demo, a Python port of MediatR.Extensions.Hangfire's example.

It only **enqueues**: the workers (`python -m services.worker general|balanced|heavy`) run the jobs.
The original's endpoints live under `/api/distributeddemo/` with its query parameters, so its curl
examples work unchanged; paths and query parameter names match in any letter case. Bad input gets a 400
naming the field, before anything reaches Redis or the database; a body that is not JSON a 415; more jobs
than a client's budget per minute a 429; an unreachable Redis or database a 503.

The job dashboard is at `/dashboard` (the original's `/hangfire` redirects there).
"""


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API app on *settings* (read from the environment by default).

    The app's lifespan opens the mediator (Redis pool, database engine, schema) and closes it after.
    """
    settings = settings or Settings.from_env("api")
    service = ServiceInfo(settings=settings, started_at=datetime.now(UTC))
    budget = JobBudget(per_minute=settings.job_budget)
    mediator = build_mediator(settings)
    plugins: list[PluginProtocol] = [
        MediatorPlugin(mediator),
        PydanticPlugin(prefer_alias=True),
        DashboardPlugin(
            mediator,
            path=DASHBOARD_PATH,
            authorize=dashboard_access(settings),
            read_only=settings.dashboard_read_only,
            jaeger_url=settings.jaeger_url,
        ),
    ]
    on_shutdown: list[Callable[[], None]] = []
    telemetry = configure_telemetry(settings.service_name)
    if telemetry is not None:
        correlate_logs()
        # HTTP SERVER spans; the ASGI receive/send spans inside each request are noise.
        # Health checks would fill the trace store with one trace each.
        plugins.append(
            OpenTelemetryPlugin(OpenTelemetryConfig(exclude_spans=["receive", "send"], exclude=["/health"]))
        )
        on_shutdown.append(telemetry.shutdown)
    return CaseInsensitiveLitestar(
        route_handlers=[
            DistributedDemoController,
            container_info,
            health,
            create_user,
            read_user,
            create_report,
            read_job,
            swagger_redirect,
            hangfire_redirect,
        ],
        plugins=plugins,
        on_shutdown=on_shutdown,
        dependencies={
            "service": Provide(lambda: service, sync_to_thread=False),
            "budget": Provide(lambda: budget, sync_to_thread=False),
        },
        signature_namespace={"ServiceInfo": ServiceInfo, "JobBudget": JobBudget},
        before_request=check_input,
        after_exception=[log_server_errors],
        exception_handlers={
            ValidationException: name_fields_as_sent,
            ClientException: explain_unreadable_body,
            OperationalError: database_unavailable,
            InterfaceError: database_unavailable,
        },
        openapi_config=OpenAPIConfig(
            title="arq-mediator distributed demo API",
            version="0.1.0",
            description=DESCRIPTION,
            path="/schema",
            render_plugins=[ContractSwagger(), ContractJson(), ContractScalar(), ContractRedoc()],
        ),
        debug=False,
    )


_app: Litestar | None = None


def __getattr__(name: str) -> Litestar:
    """Build ``app`` from the environment on first access (``uvicorn services.api.app:app``)."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = create_app()
    return _app
