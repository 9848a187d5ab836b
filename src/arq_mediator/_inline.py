"""Inline dispatch: run a request's pipeline and handler, or a notification's handlers, here and now."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import NoHandlerError
from ._messages import Notification, Request
from ._telemetry import traced_head, tracing_enabled

if TYPE_CHECKING:
    from ._context import Context
    from ._registry import Registry, Route

R = TypeVar("R")


class InlineDispatch:
    """The inline half of `Mediator`: `send` and `publish`; the mediator provides the attributes below.

    Routes are bound to the inline context, built on first use and dropped on any registration.
    """

    _registry: Registry
    _inline_context: Context
    _inline_routes: dict[type, Route]
    _inline_fanouts: dict[type, list[Route]]

    def send(self, request: Request[R]) -> Coroutine[Any, Any, R]:
        """Run *request* through the pipeline and its handler, here and now; await the result.

        Raises:
            NoHandlerError: no handler is registered for the request's type.
            TypeError: *request* is a `Notification`: use `publish`.
            Exception: whatever the handler (or a behaviour) raises, unchanged.
        """
        # Returning the pipeline's own coroutine, rather than awaiting it in a frame of ours, keeps the
        # dispatch cost to a dictionary look-up.
        try:
            head, tail = self._inline_routes[type(request)]
        except KeyError:
            try:
                head, tail = self._inline_route(type(request))
            except (NoHandlerError, TypeError) as error:
                # Raised on await, like any coroutine's error, so gather() of several sends stays tidy.
                return _raise(error)
        return head(request, tail)  # type: ignore[return-value]

    def send_with(self, request: Request[R], ctx: Context) -> Coroutine[Any, Any, R]:
        """Run *request* inline with *ctx* as its handler's context (`Context.send` calls this).

        Raises:
            NoHandlerError: no handler is registered for the request's type.
        """
        if ctx is self._inline_context:
            return self.send(request)
        try:
            spec = self._registry.handler_for(type(request))
        except NoHandlerError as error:
            return _raise(error)
        head, tail = _traced(self._registry.route(spec, ctx), type(request))
        return head(request, tail)  # type: ignore[return-value]

    def _inline_route(self, request_type: type) -> Route:
        if issubclass(request_type, Notification):
            raise TypeError(
                f"send() takes a Request; {request_type.__qualname__} is a Notification: use publish()"
            )
        route = self._registry.route(self._registry.handler_for(request_type), self._inline_context)
        self._inline_routes[request_type] = route = _traced(route, request_type)
        return route

    async def publish(self, notification: Notification) -> None:
        """Run every handler of *notification* concurrently, here and now.

        Every handler runs to the end even when another fails; then the failures, if any, are raised
        together. A notification with no handler is not an error: nobody was interested.

        Raises:
            ExceptionGroup: one or more handlers failed; it holds each handler's exception.
            TypeError: *notification* is a `Request`: use `send`.
        """
        notification_type = type(notification)
        routes = self._inline_fanouts.get(notification_type)
        if routes is None:
            if not isinstance(notification, Notification):
                raise TypeError(
                    f"publish() takes a Notification; {notification_type.__qualname__} is not one: "
                    "a request has one handler, run it with send()"
                )
            routes = [
                _traced(self._registry.route(spec, self._inline_context), notification_type)
                for spec in self._registry.handlers_of(notification_type)
            ]
            self._inline_fanouts[notification_type] = routes
        outcomes = await asyncio.gather(
            *(head(notification, tail) for head, tail in routes), return_exceptions=True
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure
        if failures:
            raise ExceptionGroup(
                f"{len(failures)} of {len(routes)} handlers of {notification_type.__qualname__} failed",
                [failure for failure in failures if isinstance(failure, Exception)],
            )


async def _raise(error: Exception) -> Any:
    raise error


def _traced(route: Route, message_type: type) -> Route:
    """Wrap an inline route in an INTERNAL span when an OpenTelemetry SDK is set; else leave it bare.

    Decided when the route is built (on first use, and again after `async with mediator` opens), so the
    untraced hot path carries no check at all.
    """
    if not tracing_enabled():
        return route
    head, tail = route
    return traced_head(head, getattr(message_type, "message_name", message_type.__qualname__)), tail
