"""Static typing (checked by mypy --strict on this file) and the package's import-time surface.

Every `assert_type` below is verified by mypy and is a no-op when the tests run. The handlers checked with
`assert_type` take positional-only parameters because a plain `Callable[[...], ...]` type has no parameter
names, so only then can the decorated function's type be spelled out exactly. The `# type: ignore[...]`
lines under `if TYPE_CHECKING:` are expected errors: mypy --strict reports an unused ignore, so each one
fails the type check if the error it expects ever stops being reported.
"""

from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, assert_type

from pydantic import BaseModel

import arq_mediator
from arq_mediator import CallNext, Context, Mediator, Notification, Request


class UserOut(BaseModel):
    id: int
    email: str


class CreateUser(Request[UserOut]):
    email: str


class CountUsers(Request[int]):
    pass


class UserCreated(Notification):
    user_id: int


class Database:
    def __init__(self, url: str) -> None:
        self.url = url


CreateUserHandler = Callable[[CreateUser, Context], Coroutine[Any, Any, UserOut]]
UserCreatedHandler = Callable[[UserCreated], Coroutine[Any, Any, None]]
Behavior = Callable[[Any, CallNext], Coroutine[Any, Any, Any]]


async def create_user(request: CreateUser, ctx: Context, /) -> UserOut:
    return UserOut(id=1, email=request.email)


async def on_created(event: UserCreated, /) -> None:
    return None


async def passthrough(request: Any, call_next: CallNext, /) -> Any:
    return await call_next(request)


async def test_send_is_typed_by_the_request(mediator: Mediator) -> None:
    """`send` of a Request[UserOut] is typed as returning UserOut, awaited or not."""
    mediator.handler(create_user)

    @mediator.handler
    async def count_users(request: CountUsers) -> int:
        return 3

    user = assert_type(await mediator.send(CreateUser(email="a@example.com")), UserOut)
    assert user == UserOut(id=1, email="a@example.com")
    pending = assert_type(mediator.send(CountUsers()), Coroutine[Any, Any, int])
    assert await pending == 3


def test_bare_handler_decorator_preserves_the_function_type(mediator: Mediator) -> None:
    """`mediator.handler(fn)` is typed as, and is, `fn` itself."""
    decorated = assert_type(mediator.handler(create_user), CreateUserHandler)
    assert decorated is create_user
    assert assert_type(mediator.handler(on_created), UserCreatedHandler) is on_created


def test_handler_decorator_with_options_preserves_the_function_type(mediator: Mediator) -> None:
    """`mediator.handler(queue=..., ...)(fn)` is typed as, and is, `fn` itself."""
    decorator = mediator.handler(queue="critical", max_tries=3, timeout=timedelta(seconds=5))
    decorated = assert_type(decorator(create_user), CreateUserHandler)
    assert decorated is create_user


def test_decorator_syntax_keeps_parameter_types(mediator: Mediator) -> None:
    """A handler decorated with `@mediator.handler(...)` keeps its signature for type checkers."""

    @mediator.handler(queue="critical")
    async def create(request: CreateUser, ctx: Context, /) -> UserOut:
        raise NotImplementedError

    assert_type(create, CreateUserHandler)

    @Mediator().handler
    async def named(request: CreateUser, ctx: Context) -> UserOut:
        raise NotImplementedError

    if TYPE_CHECKING:
        _ = named(CountUsers(), mediator.context)  # type: ignore[arg-type]
        _ = named(request=CreateUser(email="a"), ctx=mediator.context)  # keywords still type-check


def test_behavior_decorators_preserve_the_function_type(mediator: Mediator) -> None:
    """`mediator.behavior(fn)` and `mediator.behavior(applies_to=...)(fn)` are typed as `fn`."""
    assert assert_type(mediator.behavior(passthrough), Behavior) is passthrough
    assert assert_type(mediator.behavior(applies_to=CreateUser)(passthrough), Behavior) is passthrough


async def test_resource_and_provide_are_typed(mediator: Mediator) -> None:
    """`ctx.resource(T)` is typed as T, and `provide` returns its argument's type."""
    database = assert_type(mediator.provide(Database("sqlite://")), Database)
    found: list[str] = []

    @mediator.handler
    async def count_users(request: CountUsers, ctx: Context) -> int:
        found.append(assert_type(ctx.resource(Database), Database).url)
        return 0

    await mediator.send(CountUsers())
    assert found == ["sqlite://"]
    assert assert_type(mediator.context.resource(Database), Database) is database


def test_type_checker_rejects_misuse(mediator: Mediator) -> None:
    """Sending a notification, registering a sync handler or misusing a resource are static type errors."""
    if TYPE_CHECKING:

        def sync_handler(request: CreateUser, ctx: Context) -> UserOut:
            raise NotImplementedError

        _ = mediator.send(UserCreated(user_id=1))  # type: ignore[arg-type]
        mediator.handler(sync_handler)  # type: ignore[type-var]
        _ = mediator.context.resource(Database).missing  # type: ignore[attr-defined]
    assert mediator._registry.requests == {}


# The package as shipped ----------------------------------------------------------------------------------


def test_import_does_not_pull_in_web_frameworks() -> None:
    """`import arq_mediator` imports no web framework (litestar, starlette, fastapi)."""
    script = (
        "import json, sys\n"
        "import arq_mediator\n"
        "frameworks = {'litestar', 'starlette', 'fastapi'}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.partition('.')[0] in frameworks)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []


def test_all_is_sorted_and_complete() -> None:
    """`arq_mediator.__all__` is sorted, has no duplicates, and every name in it exists."""
    names = arq_mediator.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    missing = [name for name in names if not hasattr(arq_mediator, name)]
    assert missing == []


def test_public_names_are_exported() -> None:
    """Every public class the package defines at top level is listed in `__all__`."""
    public = {
        name
        for name, value in vars(arq_mediator).items()
        if not name.startswith("_")
        and isinstance(value, type)
        and value.__module__.startswith("arq_mediator")
    }
    assert public <= set(arq_mediator.__all__)


def test_py_typed_marker_ships() -> None:
    """The package carries its `py.typed` marker, so type checkers use its annotations."""
    marker = importlib.resources.files("arq_mediator").joinpath("py.typed")
    assert marker.is_file()
