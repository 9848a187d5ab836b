"""Behaviours: nesting order, short-circuits, error handling, request replacement and scoping."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from pydantic import BaseModel

from arq_mediator import CallNext, Context, HandlerRegistrationError, Mediator, Message, Notification, Request


class UserOut(BaseModel):
    id: int
    email: str


class Pong(BaseModel):
    value: int


class CreateUser(Request[UserOut]):
    email: str


class CreateAdmin(CreateUser):
    pass


class Ping(Request[Pong]):
    value: int = 0


class UserCreated(Notification):
    user_id: int


class UserNotFound(Exception):
    pass


class ServiceError(Exception):
    pass


@pytest.fixture
def calls() -> list[str]:
    """Return the list in which handlers and behaviours record what ran."""
    return []


@pytest.fixture
def handled(mediator: Mediator, calls: list[str]) -> Mediator:
    """Return the mediator with recording handlers for CreateUser, CreateAdmin, Ping and UserCreated."""

    @mediator.handler
    async def create_user(request: CreateUser, ctx: Context) -> UserOut:
        calls.append(f"create_user {request.email}")
        return UserOut(id=1, email=request.email)

    @mediator.handler
    async def create_admin(request: CreateAdmin) -> UserOut:
        calls.append("create_admin")
        return UserOut(id=0, email=request.email)

    @mediator.handler
    async def ping(request: Ping) -> Pong:
        calls.append("ping")
        return Pong(value=request.value)

    @mediator.handler
    async def on_created(event: UserCreated) -> None:
        calls.append("on_created")

    return mediator


async def test_first_registered_behavior_is_outermost(handled: Mediator, calls: list[str]) -> None:
    """Behaviours nest in registration order: the first registered enters first and exits last."""

    @handled.behavior
    async def outer(request: Any, call_next: CallNext) -> Any:
        calls.append("outer enter")
        result = await call_next(request)
        calls.append("outer exit")
        return result

    @handled.behavior
    async def inner(request: Any, call_next: CallNext) -> Any:
        calls.append("inner enter")
        result = await call_next(request)
        calls.append("inner exit")
        return result

    result = await handled.send(CreateUser(email="a@example.com"))
    assert result == UserOut(id=1, email="a@example.com")
    assert calls == ["outer enter", "inner enter", "create_user a@example.com", "inner exit", "outer exit"]


async def test_behavior_can_short_circuit(handled: Mediator, calls: list[str]) -> None:
    """A behaviour that returns without calling call_next supplies the result; the handler never runs."""
    cached = UserOut(id=99, email="cached@example.com")

    @handled.behavior
    async def cache(request: Any, call_next: CallNext) -> Any:
        return cached

    assert await handled.send(CreateUser(email="a@example.com")) is cached
    assert calls == []


async def test_behavior_sees_and_translates_handler_exception(mediator: Mediator) -> None:
    """A behaviour catches what the handler raises and may raise something else instead."""
    original = UserNotFound("no user 3")
    seen: list[BaseException] = []

    @mediator.handler
    async def create_user(request: CreateUser) -> UserOut:
        raise original

    @mediator.behavior
    async def translate(request: Any, call_next: CallNext) -> Any:
        try:
            return await call_next(request)
        except UserNotFound as error:
            seen.append(error)
            raise ServiceError("lookup failed") from error

    with pytest.raises(ServiceError, match="lookup failed") as caught:
        await mediator.send(CreateUser(email="a@example.com"))
    assert seen == [original]
    assert caught.value.__cause__ is original


async def test_behavior_can_replace_the_request(handled: Mediator, calls: list[str]) -> None:
    """The message a behaviour passes to call_next is the one the handler receives."""

    @handled.behavior
    async def normalise(request: CreateUser, call_next: CallNext) -> Any:
        return await call_next(request.model_copy(update={"email": request.email.lower()}))

    result = await handled.send(CreateUser(email="ADA@Example.COM"))
    assert result.email == "ada@example.com"
    assert calls == ["create_user ada@example.com"]


async def test_first_parameter_annotation_scopes_the_behavior(handled: Mediator, calls: list[str]) -> None:
    """A behaviour annotated with a message type wraps that type and its subclasses, and nothing else."""

    @handled.behavior
    async def users_only(request: CreateUser, call_next: CallNext) -> Any:
        calls.append(f"users_only {type(request).__name__}")
        return await call_next(request)

    await handled.send(CreateUser(email="a@example.com"))
    await handled.send(CreateAdmin(email="root@example.com"))
    await handled.send(Ping())
    await handled.publish(UserCreated(user_id=1))
    assert calls == [
        "users_only CreateUser",
        "create_user a@example.com",
        "users_only CreateAdmin",
        "create_admin",
        "ping",
        "on_created",
    ]


async def test_notification_annotation_scopes_to_notifications(handled: Mediator, calls: list[str]) -> None:
    """A behaviour annotated `Notification` wraps notification handlers only, not requests."""

    @handled.behavior
    async def events_only(event: Notification, call_next: CallNext) -> Any:
        calls.append(f"events_only {type(event).__name__}")
        return await call_next(event)

    await handled.send(Ping())
    await handled.publish(UserCreated(user_id=1))
    assert calls == ["ping", "events_only UserCreated", "on_created"]


async def test_parametrised_request_annotation_scopes_by_response_type(
    handled: Mediator, calls: list[str]
) -> None:
    """A behaviour annotated `Request[UserOut]` wraps every request declaring that response type."""

    @handled.behavior
    async def user_responses(request: Request[UserOut], call_next: CallNext) -> Any:
        calls.append("user_responses")
        return await call_next(request)

    await handled.send(CreateUser(email="a@example.com"))
    await handled.send(CreateAdmin(email="root@example.com"))
    await handled.send(Ping())
    assert calls == ["user_responses", "create_user a@example.com", "user_responses", "create_admin", "ping"]


async def test_applies_to_a_type_scopes_the_behavior(handled: Mediator, calls: list[str]) -> None:
    """`applies_to=Type` wraps that type and its subclasses, overriding the first parameter's annotation."""

    @handled.behavior(applies_to=Ping)
    async def pings_only(request: CreateUser, call_next: CallNext) -> Any:
        calls.append(f"pings_only {type(request).__name__}")
        return await call_next(request)

    await handled.send(CreateUser(email="a@example.com"))
    await handled.send(Ping())
    assert calls == ["create_user a@example.com", "pings_only Ping", "ping"]
    assert handled._registry.behaviors[0].applies_to == (Ping,)


async def test_applies_to_a_tuple_scopes_the_behavior(handled: Mediator, calls: list[str]) -> None:
    """`applies_to=(A, B)` wraps messages of either type (and their subclasses) only."""

    @handled.behavior(applies_to=(Ping, UserCreated))
    async def some(request: Any, call_next: CallNext) -> Any:
        calls.append(f"some {type(request).__name__}")
        return await call_next(request)

    await handled.send(CreateUser(email="a@example.com"))
    await handled.send(Ping())
    await handled.publish(UserCreated(user_id=1))
    assert calls == ["create_user a@example.com", "some Ping", "ping", "some UserCreated", "on_created"]


async def _unannotated(request, call_next):  # type: ignore[no-untyped-def]
    return await call_next(request)


async def _any_annotated(request: Any, call_next: CallNext) -> Any:
    return await call_next(request)


async def _message_annotated(request: Message, call_next: CallNext) -> Any:
    return await call_next(request)


async def _object_annotated(request: object, call_next: CallNext) -> Any:
    return await call_next(request)


@pytest.mark.parametrize("behavior", [_unannotated, _any_annotated, _message_annotated, _object_annotated])
async def test_unscoped_behavior_applies_to_all(handled: Mediator, calls: list[str], behavior: Any) -> None:
    """A behaviour unannotated, or annotated Any, Message or object, wraps every message type."""
    handled.behavior(behavior)
    assert handled._registry.behaviors[0].applies_to is None
    for message_type in (CreateUser, CreateAdmin, Ping, UserCreated):
        assert [spec.function for spec in handled._registry.behaviors_for(message_type)] == [behavior]


async def test_behavior_wraps_each_notification_handler(mediator: Mediator) -> None:
    """Around a notification, a behaviour runs once per handler, wrapping each one separately."""
    calls: list[str] = []

    @mediator.behavior
    async def around(event: UserCreated, call_next: CallNext) -> Any:
        calls.append("around enter")
        result = await call_next(event)
        calls.append("around exit")
        return result

    def recorder(name: str) -> Callable[[UserCreated], Coroutine[Any, Any, None]]:
        async def handle(event: UserCreated) -> None:
            calls.append(name)

        return handle

    for name in ("first", "second", "third"):
        mediator.handler(recorder(name))

    await mediator.publish(UserCreated(user_id=1))
    assert calls == [
        "around enter",
        "first",
        "around exit",
        "around enter",
        "second",
        "around exit",
        "around enter",
        "third",
        "around exit",
    ]


async def test_behavior_registered_after_a_send_applies_to_later_sends(
    handled: Mediator, calls: list[str]
) -> None:
    """Registering a behaviour drops cached pipelines, so sends and publishes after it are wrapped."""
    await handled.send(Ping())
    await handled.publish(UserCreated(user_id=1))

    @handled.behavior
    async def late(request: Any, call_next: CallNext) -> Any:
        calls.append("late")
        return await call_next(request)

    await handled.send(Ping())
    await handled.publish(UserCreated(user_id=2))
    assert calls == ["ping", "on_created", "late", "ping", "late", "on_created"]


async def test_behavior_result_is_what_send_returns(handled: Mediator) -> None:
    """Whatever the outermost behaviour returns is the result of send."""

    @handled.behavior(applies_to=Ping)
    async def double(request: Ping, call_next: CallNext) -> Pong:
        pong: Pong = await call_next(request)
        return Pong(value=pong.value * 2)

    assert await handled.send(Ping(value=21)) == Pong(value=42)


def test_behavior_decorators_return_the_function(mediator: Mediator) -> None:
    """Both decorator forms of `@mediator.behavior` hand back the function they were given."""
    assert mediator.behavior(_any_annotated) is _any_annotated
    assert mediator.behavior(applies_to=Ping)(_any_annotated) is _any_annotated
    assert [b.function for b in mediator._registry.behaviors] == [_any_annotated, _any_annotated]


def test_sync_behavior_is_rejected(mediator: Mediator) -> None:
    """A behaviour declared with plain `def` is refused at decoration time, asking for `async def`."""

    def log(request: Any, call_next: CallNext) -> Any:
        return call_next(request)

    with pytest.raises(
        HandlerRegistrationError, match=re.escape(f"behavior {__name__}.{log.__qualname__} must")
    ):
        mediator.behavior(log)
    assert mediator._registry.behaviors == []


async def _one_parameter(request: Any) -> Any: ...
async def _four_parameters(request: Any, call_next: CallNext, ctx: Context, extra: int) -> Any: ...
async def _keyword_only_next(request: Any, *, call_next: CallNext) -> Any: ...


@pytest.mark.parametrize(
    ("behavior", "takes"),
    [
        (_one_parameter, "(request)"),
        (_four_parameters, "(request, call_next, ctx, extra)"),
        (_keyword_only_next, "(request, *, call_next)"),
    ],
)
def test_behavior_with_wrong_parameter_count_is_rejected(
    mediator: Mediator, behavior: Any, takes: str
) -> None:
    """A behaviour takes (request, call_next) or (request, call_next, ctx); the message says what it took."""
    with pytest.raises(
        HandlerRegistrationError,
        match=re.escape(
            f"behavior {__name__}.{behavior.__qualname__} must take (request, call_next) or "
            f"(request, call_next, ctx) positionally; it takes {takes}"
        ),
    ):
        mediator.behavior(behavior)


async def test_a_behavior_with_a_third_parameter_receives_the_context(mediator: Mediator) -> None:
    """A behaviour declaring `ctx` gets the handler's context: inline, the mediator's own, with no job."""
    seen: list[Context] = []

    @mediator.behavior
    async def noting(request: Any, call_next: CallNext, ctx: Context) -> Any:
        seen.append(ctx)
        return await call_next(request)

    @mediator.handler
    async def ping(request: Ping) -> Pong:
        return Pong(value=request.value)

    assert await mediator.send(Ping(value=3)) == Pong(value=3)
    assert seen == [mediator.context]
    assert seen[0].job is None


async def test_union_annotation_scopes_to_each_member(mediator: Mediator) -> None:
    """A behaviour annotated `Ping | UserCreated` wraps those two types and nothing else."""
    seen: list[str] = []

    @mediator.behavior
    async def scoped(request: Ping | UserCreated, call_next: CallNext) -> Any:
        seen.append(type(request).__name__)
        return await call_next(request)

    @mediator.handler
    async def ping(request: Ping) -> Pong:
        return Pong(value=1)

    @mediator.handler
    async def create(request: CreateUser) -> UserOut:
        return UserOut(id=1, email=request.email)

    @mediator.handler
    async def created(event: UserCreated) -> None: ...

    await mediator.send(Ping())
    await mediator.send(CreateUser(email="a@example.com"))
    await mediator.publish(UserCreated(user_id=1))
    assert seen == ["Ping", "UserCreated"]


def test_behavior_annotated_with_a_non_message_type_is_refused(mediator: Mediator) -> None:
    """Annotating the request as `int` cannot scope anything, so registration says so instead of widening."""

    async def odd(request: int, call_next: CallNext) -> Any:
        return await call_next(request)

    with pytest.raises(HandlerRegistrationError, match="scope it with a message type"):
        mediator.behavior(odd)
