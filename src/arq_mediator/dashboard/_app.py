"""The dashboard as a Litestar router, a Litestar plugin, or an ASGI app for any ASGI framework."""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from litestar import Litestar, Request, Response, Router
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.plugins import InitPlugin
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ASGIApp
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._errors import QueueNotConnectedError, QueueUnavailableError
from .._mediator import Mediator
from ._access import Authorize, admitted, refuse
from ._actions import ACTION_ROUTES
from ._model import DashboardSource
from ._pages import PAGES
from ._rendering import SECURITY_HEADERS, Dashboard
from ._store import RedisDashboardSource

if TYPE_CHECKING:
    from litestar.types import ExceptionHandlersMap

logger = logging.getLogger("arq_mediator.dashboard")

__all__ = ["DashboardPlugin", "dashboard_app", "dashboard_router"]


def _source_of(source_or_mediator: DashboardSource | Mediator) -> DashboardSource:
    if isinstance(source_or_mediator, Mediator):
        return RedisDashboardSource(source_or_mediator)
    return source_or_mediator


def _mount_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"the dashboard's path must start with '/', got {path!r}")
    return path.rstrip("/")


def _error_pages(dashboard: Dashboard) -> Any:
    """Return the exception handler that answers any failure with an HTML page saying what went wrong."""

    def error_page(request: Request[Any, Any, Any], error: Exception) -> Response[str]:
        if isinstance(error, HTTPException):
            status, detail = error.status_code, error.detail
        elif isinstance(error, RedisError | QueueNotConnectedError | QueueUnavailableError | OSError):
            logger.warning("%s %s: Redis is unavailable: %r", request.method, request.url.path, error)
            status, detail = (
                HTTP_503_SERVICE_UNAVAILABLE,
                "Redis is unavailable; this page works again once it is back",
            )
        else:
            logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
            status, detail = (
                HTTP_500_INTERNAL_SERVER_ERROR,
                "the dashboard failed on this page; its log says why",
            )
        response = dashboard.render(
            request, "error.html", status=status, title=f"Error {status}", code=status, detail=detail
        )
        response.headers.update(SECURITY_HEADERS)
        if status == HTTP_503_SERVICE_UNAVAILABLE:
            response.headers["Retry-After"] = "5"
        return response

    return error_page


_STATUSES = [400, 401, 403, 404, 405, 409, 413, 415, 429, 500, 503]
_ERRORS: list[type[Exception]] = [
    HTTPException,
    RedisError,
    RedisConnectionError,
    RedisTimeoutError,
    QueueNotConnectedError,
    QueueUnavailableError,
    OSError,
    Exception,
]


def _guard(dashboard: Dashboard) -> Any:
    async def admit(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not await admitted(connection, dashboard.authorize):
            if dashboard.authorize is not None:
                raise refuse("not authorized to see the dashboard")
            if not connection.scope.get("client"):
                # Said apart because the operator, not the visitor, has to act: nothing local can pass.
                raise refuse(
                    "the dashboard serves only local requests, and this one has no peer address (a server"
                    " on a Unix socket?): give the dashboard an authorize hook to admit it"
                )
            raise refuse("the dashboard serves only local requests")

    return admit


def _secure(response: Response[Any]) -> Response[Any]:
    response.headers.update(SECURITY_HEADERS)
    return response


def dashboard_router(
    source_or_mediator: DashboardSource | Mediator,
    *,
    path: str = "/dashboard",
    authorize: Authorize | None = None,
    read_only: bool = False,
    jaeger_url: str | None = None,
) -> Router:
    """Return the dashboard as a Litestar router to register in one's own app at *path*.

    Args:
        source_or_mediator: A `DashboardSource`, or a mediator whose Redis the dashboard reads; the app
            that registers the router keeps the mediator open (``MediatorPlugin`` does).
        path: Where the dashboard answers.
        authorize: ``authorize(request) -> bool`` (or an awaitable of one) decides who may see it; by
            default only requests whose socket peer is a loopback address. A server on a Unix socket
            reports no peer address, so without ``authorize`` it answers every request 403.
        read_only: Hide every action and refuse it (403).
        jaeger_url: The Jaeger UI's base URL, to link each job's trace.
    """
    return _router(
        Dashboard(
            source=_source_of(source_or_mediator),
            path=_mount_path(path),
            authorize=authorize,
            read_only=read_only,
            jaeger_url=jaeger_url,
        )
    )


def _router(dashboard: Dashboard) -> Router:
    # Litestar picks a handler by status code first, then by the exception's classes: naming each here
    # keeps the host app's own handlers (JSON bodies, say) away from the dashboard's pages.
    error_page = _error_pages(dashboard)
    exception_handlers: ExceptionHandlersMap = dict.fromkeys([*_STATUSES, *_ERRORS], error_page)
    static = create_static_files_router(
        "/static",
        directories=[files("arq_mediator.dashboard") / "static"],  # type: ignore[list-item]
        include_in_schema=False,
        name="arqm-dashboard:static",
        cache_control=None,
    )
    return Router(
        dashboard.path or "/",
        route_handlers=[*PAGES, *ACTION_ROUTES, static],
        dependencies={"dashboard": Provide(lambda: dashboard, sync_to_thread=False)},
        signature_namespace={"Dashboard": Dashboard},
        guards=[_guard(dashboard)],
        exception_handlers=exception_handlers,
        after_request=_secure,
        include_in_schema=False,
    )


class DashboardPlugin(InitPlugin):
    """Add the dashboard to a Litestar app: ``Litestar(plugins=[MediatorPlugin(m), DashboardPlugin(m)])``.

    Args:
        source_or_mediator: As for `dashboard_router`; the app keeps a mediator open (``MediatorPlugin``).
        path: As for `dashboard_router`.
        authorize: As for `dashboard_router`.
        read_only: As for `dashboard_router`.
        jaeger_url: As for `dashboard_router`.

    Attributes:
        router: The router the plugin registers.
    """

    __slots__ = ("router",)

    def __init__(
        self,
        source_or_mediator: DashboardSource | Mediator,
        *,
        path: str = "/dashboard",
        authorize: Authorize | None = None,
        read_only: bool = False,
        jaeger_url: str | None = None,
    ) -> None:
        # Spelled out rather than **options, so a misspelt keyword fails the type check, not the app's start.
        self.router = dashboard_router(
            source_or_mediator, path=path, authorize=authorize, read_only=read_only, jaeger_url=jaeger_url
        )

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Register the dashboard's router."""
        app_config.route_handlers.append(self.router)
        return app_config


def dashboard_app(
    source_or_mediator: DashboardSource | Mediator,
    *,
    path: str = "/",
    authorize: Authorize | None = None,
    read_only: bool = False,
    jaeger_url: str | None = None,
) -> ASGIApp:
    """Return the dashboard as an ASGI app, to serve alone or mount under any ASGI framework.

    Given a mediator, the app's lifespan opens and closes it; mounted where sub-apps get no lifespan
    events, open the mediator in the host's lifespan instead and pass a source or keep it open.

    Args:
        source_or_mediator: A `DashboardSource`, or the mediator whose Redis the dashboard reads.
        path: Where the pages answer inside this app. Mounted under a host framework, leave it at ``/``:
            the host's mount point arrives as the ASGI ``root_path`` and every link includes it.
        authorize: As for `dashboard_router`.
        read_only: As for `dashboard_router`.
        jaeger_url: As for `dashboard_router`.
    """
    dashboard = Dashboard(
        source=_source_of(source_or_mediator),
        path=_mount_path(path),
        authorize=authorize,
        read_only=read_only,
        jaeger_url=jaeger_url,
    )
    lifespan = [source_or_mediator] if isinstance(source_or_mediator, Mediator) else []
    return Litestar(
        route_handlers=[_router(dashboard)],
        lifespan=lifespan,
        exception_handlers={NotFoundException: _error_pages(dashboard)},
        openapi_config=None,
        logging_config=None,  # the host's logging stays as the host set it up
        debug=False,
    )
