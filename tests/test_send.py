"""Inline `send`: typed results, errors, the handler's context and resources, and lifespans."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from arq_mediator import (
    ArqMediatorError,
    Context,
    Mediator,
    MissingResourceError,
    NoHandlerError,
    Notification,
    Request,
)


class UserOut(BaseModel):
    id: int
    email: str


class CreateUser(Request[UserOut]):
    email: str


class CreateAdmin(CreateUser):
    pass


class CountUsers(Request[int]):
    pass


class Unregistered(Request[str]):
    pass


class UserCreated(Notification):
    user_id: int


@dataclass
class Database:
    url: str


@dataclass
class Clock:
    now: int


class Settings:
    name = "base"


class LocalSettings(Settings):
    name = "test"


class HandlerFailed(Exception):
    pass


async def test_send_returns_the_handler_result(mediator: Mediator) -> None:
    """`send` awaits to exactly what the handler returned."""
    created = UserOut(id=1, email="ada@example.com")

    @mediator.handler
    async def create_user(request: CreateUser, ctx: Context) -> UserOut:
        assert request == CreateUser(email="ada@example.com")
        return created

    assert await mediator.send(CreateUser(email="ada@example.com")) is created


async def test_each_request_type_goes_to_its_own_handler(mediator: Mediator) -> None:
    """With several request types registered, each is routed to its own handler, repeatedly."""

    @mediator.handler
    async def create_user(request: CreateUser) -> UserOut:
        return UserOut(id=1, email=request.email)

    @mediator.handler
    async def count_users(request: CountUsers) -> int:
        return 42

    for _ in range(2):  # the second round is served from the route cache
        assert await mediator.send(CountUsers()) == 42
        assert (await mediator.send(CreateUser(email="b@example.com"))).email == "b@example.com"


async def test_unregistered_type_raises_no_handler_error(mediator: Mediator) -> None:
    """Sending a type with no handler raises NoHandlerError naming it and listing the registered types."""

    @mediator.handler
    async def create_user(request: CreateUser) -> UserOut:
        raise NotImplementedError

    @mediator.handler
    async def count_users(request: CountUsers) -> int:
        raise NotImplementedError

    @mediator.handler
    async def on_created(event: UserCreated) -> None: ...

    with pytest.raises(NoHandlerError) as caught:
        await mediator.send(Unregistered())
    error = caught.value
    assert isinstance(error, LookupError)
    assert isinstance(error, ArqMediatorError)
    assert error.message_type is Unregistered
    names = [f"{__name__}.{name}" for name in ("CountUsers", "CreateUser", "UserCreated")]
    assert error.registered == names
    assert str(error) == (
        "no handler is registered for Unregistered; register one with @mediator.handler, and make sure "
        "the process imports the module that registers it. "
        f"Message types with handlers: {', '.join(names)}"
    )


async def test_no_handler_error_with_nothing_registered_says_none(mediator: Mediator) -> None:
    """With no handler at all, the NoHandlerError message lists `none`."""
    with pytest.raises(NoHandlerError, match=re.escape("Message types with handlers: none")):
        await mediator.send(Unregistered())


async def test_handler_exception_propagates_unchanged(mediator: Mediator) -> None:
    """The exception a handler raises reaches the caller as the very same object."""
    failure = HandlerFailed("boom")

    @mediator.handler
    async def create_user(request: CreateUser, ctx: Context) -> UserOut:
        raise failure

    with pytest.raises(HandlerFailed) as caught:
        await mediator.send(CreateUser(email="a@example.com"))
    assert caught.value is failure


async def test_subclass_of_a_registered_request_has_no_handler(mediator: Mediator) -> None:
    """Dispatch is by exact type: a subclass of a handled request needs a handler of its own."""

    @mediator.handler
    async def create_user(request: CreateUser) -> UserOut:
        raise NotImplementedError

    with pytest.raises(NoHandlerError, match="no handler is registered for CreateAdmin"):
        await mediator.send(CreateAdmin(email="root@example.com"))


async def test_handler_receives_the_inline_context(mediator: Mediator) -> None:
    """An inline handler's context carries the mediator, no job, and the mediator's logger."""
    seen: list[Context] = []

    @mediator.handler
    async def count_users(request: CountUsers, ctx: Context) -> int:
        seen.append(ctx)
        return 0

    await mediator.send(CountUsers())
    (ctx,) = seen
    assert ctx.mediator is mediator
    assert ctx.job is None
    assert ctx is mediator.context
    assert ctx.logger is mediator.logger
    assert mediator.logger.name == "arq_mediator"


async def test_handler_logger_is_usable(caplog: pytest.LogCaptureFixture) -> None:
    """A logger given to the mediator reaches handlers through ctx.logger and its records are emitted."""
    logger = logging.getLogger("tests.send.handlers")
    mediator = Mediator(logger=logger)

    @mediator.handler
    async def count_users(request: CountUsers, ctx: Context) -> int:
        ctx.logger.info("counting users for %s", "ada")
        return 3

    with caplog.at_level(logging.INFO, logger="tests.send.handlers"):
        assert await mediator.send(CountUsers()) == 3
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("tests.send.handlers", "counting users for ada")
    ]


async def test_resource_returns_what_was_provided(mediator: Mediator) -> None:
    """`ctx.resource(T)` returns the value given to `mediator.provide`, keyed by its type."""
    database = mediator.provide(Database(url="sqlite://"))
    seen: list[Database] = []

    @mediator.handler
    async def count_users(request: CountUsers, ctx: Context) -> int:
        seen.append(ctx.resource(Database))
        return 0

    await mediator.send(CountUsers())
    assert seen == [database]
    assert seen[0] is database
    assert dict(mediator.resources) == {Database: database}


async def test_provide_as_type_keys_by_the_given_type(mediator: Mediator) -> None:
    """`provide(value, as_type=Base)` makes the value available as `ctx.resource(Base)`, not its own type."""
    settings = mediator.provide(LocalSettings(), as_type=Settings)

    @mediator.handler
    async def count_users(request: CountUsers, ctx: Context) -> int:
        assert ctx.resource(Settings) is settings
        with pytest.raises(MissingResourceError):
            ctx.resource(LocalSettings)
        return 1

    assert await mediator.send(CountUsers()) == 1


async def test_resource_provided_after_start_is_visible(mediator: Mediator) -> None:
    """The context's resources are a live view: a value provided after a first send is seen by the next."""

    @mediator.handler
    async def count_users(request: CountUsers, ctx: Context) -> int:
        return ctx.resource(Clock).now

    with pytest.raises(MissingResourceError):
        await mediator.send(CountUsers())
    mediator.provide(Clock(now=5))
    assert await mediator.send(CountUsers()) == 5
    mediator.provide(Clock(now=6), replace=True)
    assert await mediator.send(CountUsers()) == 6


def test_providing_a_type_twice_raises_unless_replacing(mediator: Mediator) -> None:
    """A second provide() for the same type raises ValueError naming it; replace=True swaps the value."""
    first = mediator.provide(Clock(now=1))
    with pytest.raises(ValueError, match=r"a resource of type Clock was provided already; pass replace=True"):
        mediator.provide(Clock(now=2))
    assert mediator.context.resource(Clock) is first
    second = mediator.provide(Clock(now=2), replace=True)
    assert mediator.context.resource(Clock) is second


async def test_resources_provided_while_open_are_withdrawn_on_close(mediator: Mediator) -> None:
    """A lifespan's resources go when the mediator closes, so entering it again provides them afresh."""
    mediator.provide(Database(url="sqlite://"))

    @mediator.lifespan
    async def clock(m: Mediator) -> AsyncIterator[None]:
        m.provide(Clock(now=len(m.resources)))
        yield

    for _ in range(2):
        async with mediator:
            assert mediator.context.resource(Clock).now == 1
        assert set(mediator.resources) == {Database}


def test_missing_resource_lists_what_was_provided(mediator: Mediator) -> None:
    """Asking for a resource nobody provided raises MissingResourceError naming it and listing the others."""
    mediator.provide(Database(url="sqlite://"))
    mediator.provide(Clock(now=0))
    with pytest.raises(MissingResourceError) as caught:
        mediator.context.resource(Settings)
    assert isinstance(caught.value, LookupError)
    assert str(caught.value) == (
        "no resource of type Settings was provided; call mediator.provide(value) at start-up "
        "(e.g. in a @mediator.lifespan). Provided: Clock, Database"
    )


def test_missing_resource_with_nothing_provided_says_none(mediator: Mediator) -> None:
    """With no resource at all, MissingResourceError lists `none`."""
    with pytest.raises(MissingResourceError, match=r"Provided: none$"):
        mediator.context.resource(Database)


async def test_handler_can_send_another_request(mediator: Mediator) -> None:
    """A handler can send a further request through ctx.mediator and use its result."""

    @mediator.handler
    async def count_users(request: CountUsers) -> int:
        return 41

    @mediator.handler
    async def create_user(request: CreateUser, ctx: Context) -> UserOut:
        count = await ctx.mediator.send(CountUsers())
        return UserOut(id=count + 1, email=request.email)

    assert await mediator.send(CreateUser(email="a@example.com")) == UserOut(id=42, email="a@example.com")


async def test_handler_registered_after_a_send_is_found(mediator: Mediator) -> None:
    """Registering a handler after earlier sends drops the cached routes, so the new handler is used."""

    @mediator.handler
    async def count_users(request: CountUsers) -> int:
        return 1

    assert await mediator.send(CountUsers()) == 1
    with pytest.raises(NoHandlerError):
        await mediator.send(CreateUser(email="a@example.com"))

    @mediator.handler
    async def create_user(request: CreateUser) -> UserOut:
        return UserOut(id=2, email=request.email)

    assert (await mediator.send(CreateUser(email="a@example.com"))).id == 2
    assert await mediator.send(CountUsers()) == 1


# Lifespans ------------------------------------------------------------------------------------------------


async def test_lifespans_enter_in_order_and_exit_in_reverse(mediator: Mediator) -> None:
    """`async with mediator` enters lifespans in order, providing resources, and exits them in reverse."""
    events: list[str] = []

    @mediator.lifespan
    async def database(m: Mediator) -> AsyncIterator[None]:
        events.append("enter database")
        m.provide(Database(url="postgres://"))
        try:
            yield
        finally:
            events.append("exit database")

    @mediator.lifespan
    async def clock(m: Mediator) -> AsyncIterator[None]:
        events.append("enter clock")
        m.provide(Clock(now=m.context.resource(Database).url.count("/")))
        try:
            yield
        finally:
            events.append("exit clock")

    @mediator.handler
    async def count_users(request: CountUsers, ctx: Context) -> int:
        events.append(f"handler sees {ctx.resource(Database).url}")
        return ctx.resource(Clock).now

    assert events == []  # registering a lifespan runs nothing
    async with mediator as entered:
        assert entered is mediator
        assert await mediator.send(CountUsers()) == 2
        events.append("body")
    assert events == [
        "enter database",
        "enter clock",
        "handler sees postgres://",
        "body",
        "exit clock",
        "exit database",
    ]


async def test_lifespans_exit_in_reverse_when_the_body_raises(mediator: Mediator) -> None:
    """When the `async with` body raises, every lifespan still exits, in reverse, and the error propagates."""
    events: list[str] = []
    failure = HandlerFailed("body failed")

    def make_lifespan(name: str) -> None:
        @mediator.lifespan
        async def lifespan(m: Mediator) -> AsyncIterator[None]:
            events.append(f"enter {name}")
            try:
                yield
            except HandlerFailed as error:
                events.append(f"{name} saw {error}")
                raise
            finally:
                events.append(f"exit {name}")

    for name in ("first", "second", "third"):
        make_lifespan(name)

    with pytest.raises(HandlerFailed) as caught:
        async with mediator:
            raise failure
    assert caught.value is failure
    assert events == [
        "enter first",
        "enter second",
        "enter third",
        "third saw body failed",
        "exit third",
        "second saw body failed",
        "exit second",
        "first saw body failed",
        "exit first",
    ]


async def test_lifespan_failing_on_enter_exits_those_already_entered(mediator: Mediator) -> None:
    """A lifespan that fails while entering exits the ones entered before it, skips the rest, and raises."""
    events: list[str] = []
    failure = HandlerFailed("cannot connect")

    @mediator.lifespan
    async def first(m: Mediator) -> AsyncIterator[None]:
        events.append("enter first")
        try:
            yield
        finally:
            events.append("exit first")

    @mediator.lifespan
    async def broken(m: Mediator) -> AsyncIterator[None]:
        events.append("enter broken")
        if events:  # always: fail before yielding
            raise failure
        yield

    @mediator.lifespan
    async def never(m: Mediator) -> AsyncIterator[None]:
        events.append("enter never")
        yield

    with pytest.raises(HandlerFailed) as caught:
        async with mediator:
            events.append("body")
    assert caught.value is failure
    assert events == ["enter first", "enter broken", "exit first"]


async def test_mediator_can_be_entered_again_after_exit(mediator: Mediator) -> None:
    """After `async with mediator` exits, entering again runs every lifespan again."""
    events: list[str] = []

    @mediator.lifespan
    async def only(m: Mediator) -> AsyncIterator[None]:
        events.append("enter")
        yield
        events.append("exit")

    async with mediator:
        pass
    async with mediator:
        pass
    assert events == ["enter", "exit", "enter", "exit"]


async def test_mediator_without_lifespans_enters_and_exits(mediator: Mediator) -> None:
    """A mediator with no lifespan is a no-op context manager, and exiting without entering does nothing."""
    async with mediator as entered:
        assert entered is mediator
    await mediator.__aexit__(None, None, None)


def test_lifespan_decorator_returns_the_function(mediator: Mediator) -> None:
    """`@mediator.lifespan` hands back the generator function it was given."""

    async def lifespan(m: Mediator) -> AsyncIterator[None]:
        yield

    assert mediator.lifespan(lifespan) is lifespan


async def test_missing_handler_raises_on_await_not_on_call(mediator: Mediator) -> None:
    """`send` of an unhandled type raises when awaited, so gather() of sends leaves none un-awaited."""

    @mediator.handler
    async def count_users(request: CountUsers) -> int:
        return 1

    pending = mediator.send(Unregistered())  # no raise yet
    with pytest.raises(NoHandlerError):
        await pending
    results = await asyncio.gather(
        mediator.send(CountUsers()), mediator.send(Unregistered()), return_exceptions=True
    )
    assert results[0] == 1
    assert isinstance(results[1], NoHandlerError)


async def test_entering_an_open_mediator_again_is_refused(mediator: Mediator) -> None:
    """A second `async with` on an open mediator raises instead of losing track of the first lifespans."""
    async with mediator:
        with pytest.raises(RuntimeError, match="already open"):
            await mediator.__aenter__()
    async with mediator:  # closed cleanly, so it opens again
        pass


async def test_sending_a_notification_is_a_type_error_pointing_to_publish(mediator: Mediator) -> None:
    """`send` takes requests; a notification (even one with handlers) gets a TypeError naming publish()."""

    @mediator.handler
    async def on_created(event: UserCreated) -> None: ...

    with pytest.raises(TypeError, match=r"UserCreated is a Notification: use publish\(\)"):
        await mediator.send(UserCreated(user_id=1))  # type: ignore[arg-type]
