"""The API service: a Litestar app that enqueues jobs and never runs them.

``uvicorn services.api.app:app`` serves it; ``app`` is built on first access, so importing this module
builds nothing, connects to nothing and reads no environment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from litestar import Litestar, Request, Response
from litestar.di import Provide
from litestar.exceptions import ClientException, SerializationException, ValidationException
from litestar.exceptions.responses import create_exception_response
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.params import ParameterKwarg
from litestar.plugins import PluginProtocol
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.plugins.pydantic import PydanticPlugin
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy.exc import InterfaceError, OperationalError

from arq_mediator.litestar import MediatorPlugin
from services.api.demo_routes import DistributedDemoController
from services.api.resource_routes import create_report, create_user, read_job, read_user
from services.api.system_routes import ServiceInfo, container_info, health
from services.demo.handlers import build_mediator
from services.settings import Settings
from services.telemetry import configure_telemetry, correlate_logs

if TYPE_CHECKING:
    from litestar.types import Receive, Scope, Send

__all__ = ["CaseInsensitiveLitestar", "create_app"]

DESCRIPTION = """\
The API of arq-mediator's distributed demo, a Python port of MediatR.Extensions.Hangfire's example.

It only **enqueues**: the workers (`python -m services.worker general|balanced|heavy`) run the jobs.
The original's endpoints live under `/api/distributeddemo/` with its query parameters, so its curl
examples work unchanged. Bad input gets a 400 naming the field, before anything reaches Redis or the
database; an unreachable Redis or database gets a 503.
"""


class CaseInsensitiveLitestar(Litestar):
    """A Litestar app whose route paths match in any letter case, as in the original ASP.NET app.

    Only the literal parts of a path are folded to the route's spelling; path parameters (job ids) keep
    theirs.
    """

    _paths: _PathFolder | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        """Rewrite the path to its route's spelling, then handle the request as Litestar does."""
        if scope["type"] in ("http", "websocket"):
            if self._paths is None:
                self._paths = _PathFolder(route.path for route in self.routes)
            scope["path"] = self._paths.fold(scope["path"])
        await super().__call__(scope, receive, send)


class _PathFolder:
    """Map a path to the spelling of the route it matches case-insensitively; other paths pass unchanged."""

    def __init__(self, templates: Iterable[str]) -> None:
        self._static: dict[str, str] = {}
        self._spelled: set[str] = set()
        self._templates: list[list[str | None]] = []
        for template in templates:
            self._spelled.add(template)
            if "{" not in template:
                self._static[template.lower()] = template
            elif ":path}" not in template:
                self._templates.append(
                    [None if part.startswith("{") else part for part in template.split("/")]
                )

    def fold(self, path: str) -> str:
        """Return *path* spelled as the route it matches, or unchanged when it matches none."""
        if path in self._spelled:
            return path
        folded = self._static.get(path.lower())
        if folded is not None:
            return folded
        parts = path.split("/")
        for template in self._templates:
            if len(template) == len(parts) and all(
                literal is None or literal.lower() == part.lower()
                for literal, part in zip(template, parts, strict=True)
            ):
                pairs = zip(template, parts, strict=True)
                return "/".join(part if literal is None else literal for literal, part in pairs)
        return path


def _name_fields_as_sent(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Answer Litestar's 400 naming each field as the client spells it (``jobCount``, not ``job_count``)."""
    assert isinstance(error, ValidationException)
    parameters = request.route_handler.parsed_fn_signature.parameters
    for problem in error.extra if isinstance(error.extra, list) else ():
        field = parameters.get(problem.get("key", "")) if isinstance(problem, dict) else None
        if (
            field is not None
            and isinstance(field.kwarg_definition, ParameterKwarg)
            and field.kwarg_definition.name
        ):
            problem["key"] = field.kwarg_definition.name
    return create_exception_response(request, error)


def _explain_unreadable_body(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Say plainly that a body Litestar could not decode is not valid JSON (msgspec alone may not)."""
    assert isinstance(error, ClientException)
    if isinstance(error.__cause__, SerializationException):
        error.detail = f"the request body is not valid JSON: {error.detail}"
    return create_exception_response(request, error)


def _database_unavailable(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, str]]:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return Response(
        {"detail": f"the database is unavailable: {reason}; try again shortly"},
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API app on *settings* (read from the environment by default).

    The app's lifespan opens the mediator (Redis pool, database engine, schema) and closes it after.
    """
    settings = settings or Settings.from_env("api")
    service = ServiceInfo(settings=settings, started_at=datetime.now(UTC))
    plugins: list[PluginProtocol] = [
        MediatorPlugin(build_mediator(settings)),
        PydanticPlugin(prefer_alias=True),
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
        ],
        plugins=plugins,
        on_shutdown=on_shutdown,
        dependencies={"service": Provide(lambda: service, sync_to_thread=False)},
        signature_namespace={"ServiceInfo": ServiceInfo},
        exception_handlers={
            ValidationException: _name_fields_as_sent,
            ClientException: _explain_unreadable_body,
            OperationalError: _database_unavailable,
            InterfaceError: _database_unavailable,
        },
        openapi_config=OpenAPIConfig(
            title="arq-mediator distributed demo API",
            version="0.1.0",
            description=DESCRIPTION,
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(), ScalarRenderPlugin(), RedocRenderPlugin()],
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
