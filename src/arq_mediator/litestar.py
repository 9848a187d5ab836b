"""Litestar integration: the app's lifespan opens and closes the mediator, and handlers get it injected.

Importing `arq_mediator` never imports Litestar; only this module does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.di import Provide
from litestar.plugins import InitPlugin
from litestar.response import Response
from litestar.status_codes import HTTP_404_NOT_FOUND, HTTP_503_SERVICE_UNAVAILABLE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._errors import JobNotFoundError, QueueNotConnectedError, QueueUnavailableError
from ._mediator import Mediator

if TYPE_CHECKING:
    from litestar import Request
    from litestar.config.app import AppConfig

__all__ = ["MediatorPlugin"]


def _queue_unavailable(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    return Response(
        {
            "status_code": HTTP_503_SERVICE_UNAVAILABLE,
            "detail": f"the job queue is unavailable: {error or type(error).__name__}; try again shortly",
        },
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
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
        return app_config
