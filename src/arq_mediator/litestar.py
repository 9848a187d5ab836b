"""Litestar integration: the app's lifespan opens and closes the mediator, and handlers get it injected.

Importing `arq_mediator` never imports Litestar; only this module does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from litestar.di import Provide
from litestar.plugins import InitPlugin
from litestar.response import Response
from litestar.status_codes import (
    HTTP_404_NOT_FOUND,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._errors import JobNotFoundError, NoHandlerError, QueueNotConnectedError, QueueUnavailableError
from ._mediator import Mediator

if TYPE_CHECKING:
    from litestar import Request
    from litestar.config.app import AppConfig

__all__ = ["MediatorPlugin"]

logger = logging.getLogger("arq_mediator.litestar")


def _queue_unavailable(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    # The cause (a host and port, say) is for the operator's log, not for the client.
    logger.warning("%s %s: the job queue is unavailable: %r", request.method, request.url.path, error)
    return Response(
        {
            "status_code": HTTP_503_SERVICE_UNAVAILABLE,
            "detail": "the job queue is unavailable; try again shortly",
        },
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


def _no_handler(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    # A deployment mistake (the app does not import a handler module): loud in the log, plain to clients.
    logger.error("%s %s failed: %s", request.method, request.url.path, error, exc_info=error)
    return Response(
        {"status_code": HTTP_500_INTERNAL_SERVER_ERROR, "detail": "Internal Server Error"},
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
    )


def _job_not_found(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    return Response({"status_code": HTTP_404_NOT_FOUND, "detail": str(error)}, status_code=HTTP_404_NOT_FOUND)


class MediatorPlugin(InitPlugin):
    """Open *mediator* for the application's lifetime and inject it into route handlers.

    Routes declare a parameter named *dependency_key* (``mediator`` by default) annotated
    ``NamedDependency[Mediator]`` (from ``litestar.di``). An unreachable Redis answers 503 with a
    ``Retry-After``, and an unknown job id 404, rather than a 500.

    Args:
        mediator: The mediator to open on start-up and close on shutdown.
        dependency_key: The name routes use to receive it.
    """

    __slots__ = ("dependency_key", "mediator")

    def __init__(self, mediator: Mediator, *, dependency_key: str = "mediator") -> None:
        self.mediator = mediator
        self.dependency_key = dependency_key

    def _provide(self) -> Mediator:
        return self.mediator

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add the lifespan, the dependency and the error mapping to the app's configuration."""
        app_config.lifespan.append(self.mediator)
        app_config.dependencies[self.dependency_key] = Provide(self._provide, sync_to_thread=False)
        app_config.signature_namespace["Mediator"] = Mediator
        unavailable = (RedisConnectionError, RedisTimeoutError, QueueNotConnectedError, QueueUnavailableError)
        for error_type in unavailable:
            app_config.exception_handlers.setdefault(error_type, _queue_unavailable)
        app_config.exception_handlers.setdefault(JobNotFoundError, _job_not_found)
        app_config.exception_handlers.setdefault(NoHandlerError, _no_handler)
        if not self.mediator.has_handlers:
            logger.warning(
                "the mediator given to MediatorPlugin has no handlers: every send or enqueue will fail. "
                "Does the app import the modules that register them?"
            )
        return app_config
