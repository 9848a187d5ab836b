"""Handler and behaviour registration: checks at decoration time, and the pipelines bound from them."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._context import Context
from ._errors import HandlerRegistrationError, NoHandlerError
from ._messages import Message, Notification, Request, response_type_of
from ._policy import JobPolicy
from ._wire import check_json_round_trip

# A handler or a pipeline stage after adaptation: always called as (message, context).
Invoke = Callable[[Any, Context], Awaitable[Any]]
CallNext = Callable[[Any], Awaitable[Any]]
"""The ``call_next`` a behaviour receives: ``await call_next(message)`` runs the rest of the pipeline."""
BehaviorFn = Callable[[Any, CallNext], Awaitable[Any]]
Route = tuple[Callable[[Any, Any], Awaitable[Any]], Any]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One registered handler: the message type it takes, the function, and its job policy."""

    message_type: type[Message]
    function: Callable[..., Awaitable[Any]]
    invoke: Invoke
    policy: JobPolicy

    @property
    def name(self) -> str:
        """Return the handler's qualified name, as used in job records and errors."""
        return f"{self.function.__module__}.{self.function.__qualname__}"


@dataclass(frozen=True, slots=True)
class BehaviorSpec:
    """One registered behaviour, the message types it wraps (``None``: all), whether it takes the context."""

    function: Callable[..., Awaitable[Any]]
    applies_to: tuple[type, ...] | None
    takes_context: bool = False

    def applies(self, message_type: type) -> bool:
        """Return whether this behaviour wraps messages of *message_type*."""
        return self.applies_to is None or issubclass(message_type, self.applies_to)


def _describe(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def _type_hints(function: Callable[..., Any], role: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except (NameError, SyntaxError) as error:
        raise HandlerRegistrationError(
            f"{role} {_describe(function)} has an annotation that cannot be resolved ({error}); "
            "define the types it names at module level so they can be imported"
        ) from error


def _bare_signature(parameters: list[inspect.Parameter]) -> str:
    """Spell parameters as written but without annotations or defaults: ``(request, *, call_next)``."""
    return str(inspect.Signature([p.replace(annotation=p.empty, default=p.empty) for p in parameters]))


def _require_async(function: Callable[..., Any], role: str) -> None:
    if not inspect.iscoroutinefunction(function):
        raise HandlerRegistrationError(f"{role} {_describe(function)} must be declared with `async def`")


def inspect_handler(function: Callable[..., Awaitable[Any]], policy: JobPolicy) -> HandlerSpec:
    """Check *function* is a valid handler and describe it.

    Raises:
        HandlerRegistrationError: the function is sync, takes the wrong parameters, lacks a message
            annotation on its first parameter, lacks a return annotation or declares one its request
            does not promise, or its message has a field JSON cannot carry through Redis.
    """
    _require_async(function, "handler")
    parameters = list(inspect.signature(function).parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) not in (1, 2) or len(positional) != len(parameters):
        raise HandlerRegistrationError(
            f"handler {_describe(function)} must take (request, ctx) or (request); "
            f"it takes {_bare_signature(parameters)}"
        )
    hints = _type_hints(function, "handler")
    message_type = hints.get(positional[0].name)
    if not (
        isinstance(message_type, type)
        and issubclass(message_type, Request | Notification)
        and message_type not in (Request, Notification)
        and _generic_origin(message_type) is None
    ):
        raise HandlerRegistrationError(
            f"handler {_describe(function)} must annotate its first parameter with a Request or "
            f"Notification subclass, e.g. `request: CreateUser`; found {message_type!r}"
        )
    _check_return(function, message_type, hints)
    check_json_round_trip(message_type)
    invoke: Invoke = function if len(positional) == 2 else _drop_context(function)
    return HandlerSpec(message_type=message_type, function=function, invoke=invoke, policy=policy)


def _check_return(function: Callable[..., Any], message_type: type[Message], hints: dict[str, Any]) -> None:
    if "return" not in hints:
        # Unannotated, a handler's value reaches callers unchecked inline but is validated in a worker.
        try:
            returns = response_type_of(message_type) if issubclass(message_type, Request) else None
            promise = _type_name(returns)
        except TypeError as error:  # a bare Request promises nothing
            raise HandlerRegistrationError(str(error)) from None
        raise HandlerRegistrationError(
            f"handler {_describe(function)} must annotate its return type: `-> {promise}`"
        )
    declared = hints["return"]
    if not issubclass(message_type, Request):
        expected: Any = type(None)
    else:
        try:
            expected = response_type_of(message_type)
        except TypeError as error:
            raise HandlerRegistrationError(str(error)) from None
        expected = type(None) if expected is None else expected
    covariant = isinstance(declared, type) and isinstance(expected, type) and issubclass(declared, expected)
    # A handler may promise less than its request allows: `-> int` for a Request[int | None].
    narrower = _is_union(expected) and declared in typing.get_args(expected)
    if declared != expected and not covariant and not narrower and expected is not Any:
        raise HandlerRegistrationError(
            f"handler {_describe(function)} returns {_type_name(declared)} but "
            f"{message_type.__qualname__} promises {_type_name(expected)}; make the return annotation "
            f"match the request's Request[...] parameter"
        )


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")  # list[int], int | None: spelled out in full


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _generic_args(cls: type) -> tuple[Any, ...]:
    return tuple(cls.__pydantic_generic_metadata__["args"])  # type: ignore[attr-defined]


def _generic_origin(cls: type) -> type | None:
    """Return the generic class *cls* parametrizes (``Request`` for ``Request[X]``), else ``None``."""
    metadata = getattr(cls, "__pydantic_generic_metadata__", None)
    return metadata["origin"] if metadata else None


def _drop_context(function: Callable[[Any], Awaitable[Any]]) -> Invoke:
    def invoke(message: Any, ctx: Context) -> Awaitable[Any]:
        return function(message)

    return invoke


def inspect_behavior(function: BehaviorFn, applies_to: tuple[type, ...] | None) -> BehaviorSpec:
    """Check *function* is a valid behaviour; scope it by *applies_to* or its first parameter's annotation.

    Raises:
        HandlerRegistrationError: the function is sync, does not take (request, call_next) positionally,
            or its first parameter is annotated with something that is not a message type.
    """
    _require_async(function, "behavior")
    parameters = list(inspect.signature(function).parameters.values())
    if len(parameters) not in (2, 3) or any(
        p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters
    ):
        raise HandlerRegistrationError(
            f"behavior {_describe(function)} must take (request, call_next) or (request, call_next, ctx) "
            f"positionally; it takes {_bare_signature(parameters)}"
        )
    if applies_to is None:
        applies_to = _scope_of(function, _type_hints(function, "behavior").get(parameters[0].name))
    return BehaviorSpec(function=function, applies_to=applies_to, takes_context=len(parameters) == 3)


def _scope_of(function: BehaviorFn, annotation: Any) -> tuple[type, ...] | None:
    """Return the message types an annotation scopes a behaviour to; ``None`` means every message."""
    if annotation in (None, Any, object, Message):
        return None
    members = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    scope: list[type] = []
    for member in members:
        # Request[UserOut] scopes to the requests declared with that response type; Request[Any] to all.
        if isinstance(member, type) and _generic_origin(member) and _generic_args(member) == (Any,):
            member = _generic_origin(member)
        if not (isinstance(member, type) and issubclass(member, Message)):
            raise HandlerRegistrationError(
                f"behavior {_describe(function)} annotates its request as {_type_name(annotation)}; "
                "scope it with a message type (or a union of them), or leave it unannotated for all messages"
            )
        scope.append(member)
    return None if Message in scope else tuple(scope)


def _call_next(head: Callable[[Any, Any], Awaitable[Any]], tail: Any) -> CallNext:
    return lambda message: head(message, tail)


def _with_context(behavior: Callable[..., Awaitable[Any]], ctx: Context) -> BehaviorFn:
    def bound(message: Any, call_next: CallNext) -> Awaitable[Any]:
        return behavior(message, call_next, ctx)

    return bound


def bind_pipeline(handler: Invoke, behaviors: Sequence[BehaviorSpec], ctx: Context) -> Route:
    """Bind *handler* and the *behaviors* around it to *ctx*; the first behaviour ends up outermost.

    The result is a pair ``(head, tail)`` to call as ``head(message, tail)``: the handler and its context
    when there is no behaviour, else the outermost behaviour and its ``call_next``. One call shape for both
    keeps the hot path free of branches and of per-call allocations.
    """
    head: Callable[[Any, Any], Awaitable[Any]] = handler
    tail: Any = ctx
    for behavior in reversed(behaviors):
        function = _with_context(behavior.function, ctx) if behavior.takes_context else behavior.function
        head, tail = function, _call_next(head, tail)
    return head, tail


class Registry:
    """Handlers and behaviours by message type."""

    def __init__(self) -> None:
        self.requests: dict[type[Message], HandlerSpec] = {}
        self.notifications: dict[type[Message], list[HandlerSpec]] = {}
        self.behaviors: list[BehaviorSpec] = []
        self.by_name: dict[str, type[Message]] = {}
        # Exception types a job's caller may see raised as themselves, by qualified name.
        self.errors: dict[str, type[BaseException]] = {}
        self._behaviors_by_type: dict[type, tuple[BehaviorSpec, ...]] = {}

    def add_handler(self, spec: HandlerSpec) -> None:
        """Register *spec*; a second handler for one request type is an error."""
        message_type = spec.message_type
        self._check_name(message_type)
        if issubclass(message_type, Request):
            existing = self.requests.get(message_type)
            if existing is not None:
                raise HandlerRegistrationError(
                    f"{message_type.__qualname__} already has a handler, {existing.name}; a request has "
                    f"exactly one handler, so {spec.name} cannot be added (use a Notification for fan-out)"
                )
            self.requests[message_type] = spec
        else:
            handlers = self.notifications.setdefault(message_type, [])
            if any(existing.function is spec.function for existing in handlers):
                raise HandlerRegistrationError(
                    f"{spec.name} is already registered for {message_type.__qualname__}; it would run twice"
                )
            handlers.append(spec)
        self.by_name[message_type.message_name] = message_type

    def _check_name(self, message_type: type[Message]) -> None:
        other = self.by_name.get(message_type.message_name)
        if other is not None and other is not message_type:
            raise HandlerRegistrationError(
                f"{message_type.__qualname__} and {other.__qualname__} share the message name "
                f"{message_type.message_name!r}; give one a distinct `message_name` class attribute"
            )

    def add_behavior(self, spec: BehaviorSpec) -> None:
        """Register *spec* inside every behaviour registered before it."""
        self.behaviors.append(spec)
        self._behaviors_by_type.clear()

    def handler_for(self, request_type: type) -> HandlerSpec:
        """Return the handler of *request_type*.

        Raises:
            NoHandlerError: no handler is registered for exactly this type.
        """
        try:
            return self.requests[request_type]
        except KeyError:
            raise NoHandlerError(request_type, self.registered_names()) from None

    def handlers_of(self, notification_type: type) -> list[HandlerSpec]:
        """Return the handlers of *notification_type* (empty when it has none)."""
        return self.notifications.get(notification_type, [])

    def behaviors_for(self, message_type: type) -> tuple[BehaviorSpec, ...]:
        """Return the behaviours wrapping *message_type*, outermost first."""
        try:
            return self._behaviors_by_type[message_type]
        except KeyError:
            found = tuple(b for b in self.behaviors if b.applies(message_type))
            self._behaviors_by_type[message_type] = found
            return found

    def route(self, spec: HandlerSpec, ctx: Context) -> Route:
        """Return the pipeline of one handler bound to *ctx*, as ``(head, tail)``."""
        return bind_pipeline(spec.invoke, self.behaviors_for(spec.message_type), ctx)

    def registered_names(self) -> list[str]:
        """Return the stable names of every message type with a handler, sorted."""
        return sorted({t.message_name for t in self.requests} | {t.message_name for t in self.notifications})
