"""Registration: what `@mediator.handler` accepts, what it refuses at decoration time, and job policies."""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from arq_mediator import (
    ArqMediatorError,
    Backoff,
    Context,
    HandlerRegistrationError,
    Mediator,
    Message,
    Notification,
    Request,
)
from arq_mediator._policy import JobPolicy

if TYPE_CHECKING:
    # Imported for type checkers only, so the name cannot be resolved when the handler is registered.
    from decimal import Decimal


class UserOut(BaseModel):
    id: int
    email: str


class AdminOut(UserOut):
    admin: bool = True


class CreateUser(Request[UserOut]):
    email: str


class CreateAdmin(Request[UserOut]):
    email: str


class DeleteUser(Request[None]):
    user_id: int


class ListIds(Request[list[int]]):
    pass


class Anything(Request[Any]):
    pass


class UserCreated(Notification):
    user_id: int


class BareRequest(Request):  # type: ignore[type-arg]  # deliberately declares no response type
    pass


class PlainModel(BaseModel):
    value: int


class JustAMessage(Message):
    pass


class RenamedCreate(Request[UserOut]):
    message_name: ClassVar[str] = "users.create"


class OtherRenamedCreate(Request[UserOut]):
    message_name: ClassVar[str] = "users.create"


def registration_error(function: Callable[..., Any], *fragments: str) -> str:
    """Return a pattern matching an error message that names *function* and contains every fragment."""
    parts = [re.escape(function.__qualname__), *(re.escape(fragment) for fragment in fragments)]
    return "(?s)" + "".join(f"(?=.*{part})" for part in parts)


# Rejected handlers ----------------------------------------------------------------------------------------


def test_sync_function_is_rejected(mediator: Mediator) -> None:
    """A handler declared with plain `def` is refused, and the message asks for `async def`."""

    def create_user(request: CreateUser, ctx: Context) -> UserOut:
        return UserOut(id=1, email=request.email)

    with pytest.raises(HandlerRegistrationError, match=registration_error(create_user, "async def")):
        mediator.handler(create_user)  # type: ignore[type-var]
    assert mediator._registry.requests == {}


def test_registration_error_is_a_type_error_and_a_library_error() -> None:
    """HandlerRegistrationError can be caught as TypeError or as the library's base error."""
    assert issubclass(HandlerRegistrationError, TypeError)
    assert issubclass(HandlerRegistrationError, ArqMediatorError)


def test_missing_first_parameter_annotation_is_rejected(mediator: Mediator) -> None:
    """A handler whose first parameter has no annotation is refused, with an example annotation."""

    async def create_user(request, ctx: Context) -> UserOut:  # type: ignore[no-untyped-def]
        raise NotImplementedError

    with pytest.raises(
        HandlerRegistrationError,
        match=registration_error(create_user, "Request or Notification subclass", "found None"),
    ):
        mediator.handler(create_user)


async def _takes_int(request: int, ctx: Context) -> None: ...
async def _takes_plain_model(request: PlainModel, ctx: Context) -> None: ...
async def _takes_bare_notification(request: Notification, ctx: Context) -> None: ...
async def _takes_message(request: JustAMessage, ctx: Context) -> None: ...
async def _takes_union(request: CreateUser | CreateAdmin, ctx: Context) -> None: ...


@pytest.mark.parametrize(
    ("handler", "found"),
    [
        (_takes_int, "<class 'int'>"),
        (_takes_plain_model, "PlainModel"),
        (_takes_bare_notification, "Notification"),
        (_takes_message, "JustAMessage"),
        (_takes_union, "CreateUser | "),
    ],
)
def test_first_parameter_must_be_a_request_or_notification_subclass(
    mediator: Mediator, handler: Callable[..., Awaitable[Any]], found: str
) -> None:
    """A first-parameter annotation that is not a proper Request/Notification subclass is refused."""
    with pytest.raises(
        HandlerRegistrationError,
        match=registration_error(handler, "Request or Notification subclass", "request: CreateUser", found),
    ):
        mediator.handler(handler)


def test_bare_request_annotation_is_rejected(mediator: Mediator) -> None:
    """The unparametrised `Request` class itself is not a message type a handler can take."""

    async def handle(request: Request, ctx: Context) -> None:  # type: ignore[type-arg]
        raise NotImplementedError

    with pytest.raises(HandlerRegistrationError, match=registration_error(handle, "found <class")):
        mediator.handler(handle)


async def _no_parameters() -> None: ...
async def _three_parameters(request: CreateUser, ctx: Context, extra: int) -> None: ...
async def _star_args(*args: Any) -> None: ...
async def _star_kwargs(request: CreateUser, **kwargs: Any) -> None: ...
async def _keyword_only_context(request: CreateUser, *, ctx: Context) -> None: ...


@pytest.mark.parametrize(
    ("handler", "takes"),
    [
        (_no_parameters, "()"),
        (_three_parameters, "(request, ctx, extra)"),
        (_star_args, "(*args)"),
        (_star_kwargs, "(request, **kwargs)"),
        (_keyword_only_context, "(request, *, ctx)"),
    ],
)
def test_wrong_parameters_are_rejected(
    mediator: Mediator, handler: Callable[..., Awaitable[Any]], takes: str
) -> None:
    """A handler must take (request, ctx) or (request) positionally; anything else is refused."""
    with pytest.raises(
        HandlerRegistrationError,
        match=registration_error(handler, "must take (request, ctx) or (request)", f"it takes {takes}"),
    ):
        mediator.handler(handler)


def test_second_handler_for_a_request_is_rejected_naming_both(mediator: Mediator) -> None:
    """A request type has exactly one handler; the error names the existing and the new one."""

    @mediator.handler
    async def first(request: CreateUser, ctx: Context) -> UserOut:
        raise NotImplementedError

    async def second(request: CreateUser, ctx: Context) -> UserOut:
        raise NotImplementedError

    with pytest.raises(HandlerRegistrationError) as caught:
        mediator.handler(second)
    message = str(caught.value)
    assert f"{__name__}.{first.__qualname__}" in message
    assert f"{__name__}.{second.__qualname__}" in message
    assert "CreateUser already has a handler" in message
    assert "use a Notification" in message
    assert mediator._registry.requests[CreateUser].function is first


def test_return_annotation_must_match_the_response_type(mediator: Mediator) -> None:
    """A handler of Request[UserOut] annotated `-> int` is refused, naming both types and the fix."""

    async def create_user(request: CreateUser, ctx: Context) -> int:
        raise NotImplementedError

    with pytest.raises(
        HandlerRegistrationError,
        match=registration_error(
            create_user, "returns int but CreateUser promises UserOut", "Request[...] parameter"
        ),
    ):
        mediator.handler(create_user)


def test_generic_return_annotation_must_match(mediator: Mediator) -> None:
    """A handler of Request[list[int]] annotated `-> list[str]` is refused; `-> list[int]` is accepted."""

    async def wrong(request: ListIds) -> list[str]:
        raise NotImplementedError

    async def right(request: ListIds) -> list[int]:
        return [1]

    with pytest.raises(HandlerRegistrationError, match=registration_error(wrong, "ListIds promises")):
        mediator.handler(wrong)
    assert mediator.handler(right) is right


def test_generic_return_mismatch_message_spells_out_both_types(mediator: Mediator) -> None:
    """The mismatch message shows parametrised types in full, e.g. `list[str]` and `list[int]`."""

    async def wrong(request: ListIds) -> list[str]:
        raise NotImplementedError

    with pytest.raises(
        HandlerRegistrationError, match=re.escape("returns list[str] but ListIds promises list[int]")
    ):
        mediator.handler(wrong)


def test_request_of_none_handler_must_not_return_a_value(mediator: Mediator) -> None:
    """A handler of Request[None] annotated `-> int` is refused; the promised type reads `None`."""

    async def delete_user(request: DeleteUser) -> int:
        raise NotImplementedError

    with pytest.raises(
        HandlerRegistrationError,
        match=registration_error(delete_user, "returns int but DeleteUser promises None"),
    ):
        mediator.handler(delete_user)


def test_notification_handler_must_return_none(mediator: Mediator) -> None:
    """A notification handler annotated `-> int` is refused: notifications promise no value."""

    async def on_created(event: UserCreated, ctx: Context) -> int:
        raise NotImplementedError

    with pytest.raises(
        HandlerRegistrationError,
        match=registration_error(on_created, "returns int but UserCreated promises None"),
    ):
        mediator.handler(on_created)


def test_bare_request_subclass_with_return_annotation_is_rejected(mediator: Mediator) -> None:
    """A request deriving from bare `Request` has no R to check a return annotation against: refused."""

    async def handle(request: BareRequest) -> int:
        raise NotImplementedError

    with pytest.raises(
        HandlerRegistrationError,
        match=re.escape(
            "BareRequest derives from the bare Request; declare its response type, "
            "e.g. class BareRequest(Request[MyResponse])"
        ),
    ):
        mediator.handler(handle)


def test_bare_request_subclass_without_return_annotation_is_rejected(mediator: Mediator) -> None:
    """A bare-Request subclass is refused even without a return annotation: it promises nothing."""

    async def handle(request: BareRequest):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(HandlerRegistrationError, match="derives from the bare Request"):
        mediator.handler(handle)


def test_unresolvable_annotation_is_rejected(mediator: Mediator) -> None:
    """An annotation naming something that does not exist is refused, pointing at module-level types."""

    async def handle(request: NotDefinedAnywhere, ctx: Context) -> None:  # type: ignore[name-defined]  # noqa: F821
        raise NotImplementedError

    with pytest.raises(
        HandlerRegistrationError,
        match=registration_error(handle, "cannot be resolved", "NotDefinedAnywhere", "at module level"),
    ) as caught:
        mediator.handler(handle)
    assert isinstance(caught.value.__cause__, NameError)


def test_type_checking_only_annotation_is_rejected(mediator: Mediator) -> None:
    """A type imported only under TYPE_CHECKING cannot be resolved at registration, and is refused."""

    async def handle(request: CreateUser, ctx: Context) -> Decimal:
        raise NotImplementedError

    with pytest.raises(
        HandlerRegistrationError, match=registration_error(handle, "Decimal", "cannot be resolved")
    ):
        mediator.handler(handle)


def test_two_types_sharing_a_message_name_are_rejected(mediator: Mediator) -> None:
    """Two different message types with the same `message_name` cannot both have handlers."""

    @mediator.handler
    async def create(request: RenamedCreate) -> UserOut:
        raise NotImplementedError

    async def create_other(request: OtherRenamedCreate) -> UserOut:
        raise NotImplementedError

    with pytest.raises(
        HandlerRegistrationError,
        match=re.escape(
            "OtherRenamedCreate and RenamedCreate share the message name 'users.create'; "
            "give one a distinct `message_name` class attribute"
        ),
    ):
        mediator.handler(create_other)
    assert mediator._registry.by_name == {"users.create": RenamedCreate}
    assert OtherRenamedCreate not in mediator._registry.requests


def test_default_message_name_is_module_and_qualname() -> None:
    """A message type's wire name defaults to `module.QualName`; a declared one is kept, not inherited."""

    class Inherits(RenamedCreate):
        pass

    assert CreateUser.message_name == f"{__name__}.CreateUser"
    assert RenamedCreate.message_name == "users.create"
    assert Inherits.message_name == f"{__name__}.{Inherits.__qualname__}"


# Accepted handlers ----------------------------------------------------------------------------------------


async def test_handler_taking_only_the_request_works(mediator: Mediator) -> None:
    """A handler may omit the context parameter; it is then called with the request alone."""

    @mediator.handler
    async def create_user(request: CreateUser) -> UserOut:
        return UserOut(id=7, email=request.email)

    assert await mediator.send(CreateUser(email="a@example.com")) == UserOut(id=7, email="a@example.com")


async def test_covariant_return_annotation_is_accepted(mediator: Mediator) -> None:
    """A handler may promise a subclass of the request's response type."""

    @mediator.handler
    async def create_admin(request: CreateAdmin, ctx: Context) -> AdminOut:
        return AdminOut(id=1, email=request.email)

    result = await mediator.send(CreateAdmin(email="root@example.com"))
    assert isinstance(result, AdminOut)


def test_missing_return_annotation_is_rejected(mediator: Mediator) -> None:
    """A handler must annotate its return, or `send` would pass on a value nothing checked."""

    async def create_user(request: CreateUser, ctx: Context):  # type: ignore[no-untyped-def]
        return UserOut(id=1, email=request.email)

    with pytest.raises(HandlerRegistrationError, match=r"must annotate its return type: `-> UserOut`"):
        mediator.handler(create_user)


def test_matching_none_and_any_return_annotations_are_accepted(mediator: Mediator) -> None:
    """`-> None` matches Request[None] and notifications; anything matches Request[Any]."""

    async def delete_user(request: DeleteUser) -> None:
        return None

    async def on_created(event: UserCreated) -> None:
        return None

    async def anything(request: Anything) -> int:
        return 1

    for function in (delete_user, on_created, anything):
        mediator.handler(function)
    assert set(mediator._registry.requests) == {DeleteUser, Anything}
    assert set(mediator._registry.notifications) == {UserCreated}


def test_handler_name_is_module_and_qualname(mediator: Mediator) -> None:
    """A registered handler is named `module.QualName`, as job records and errors show it."""

    @mediator.handler
    async def create_user(request: CreateUser) -> UserOut:
        raise NotImplementedError

    assert mediator._registry.requests[CreateUser].name == f"{__name__}.{create_user.__qualname__}"


def test_decorator_with_options_stores_a_job_policy(mediator: Mediator) -> None:
    """Options given to `@mediator.handler(...)` become the handler's JobPolicy, timedeltas in seconds."""
    backoff = Backoff(initial=0.5, factor=3.0, maximum=60.0, jitter=0.0)

    @mediator.handler(
        queue="critical",
        max_tries=3,
        timeout=timedelta(seconds=5),
        retry_on=(ConnectionError,),
        backoff=backoff,
        keep_result=timedelta(hours=1),
    )
    async def create_user(request: CreateUser, ctx: Context) -> UserOut:
        raise NotImplementedError

    assert mediator._registry.requests[CreateUser].policy == JobPolicy(
        queue="critical",
        max_tries=3,
        timeout=5.0,
        retry_on=(ConnectionError,),
        backoff=backoff,
        keep_result=3600.0,
    )


def test_default_job_policy(mediator: Mediator) -> None:
    """A handler registered without options gets the default JobPolicy; `timeout=None` means no limit."""

    @mediator.handler
    async def create_user(request: CreateUser) -> UserOut:
        raise NotImplementedError

    @mediator.handler(timeout=None)
    async def delete_user(request: DeleteUser) -> None:
        raise NotImplementedError

    assert mediator._registry.requests[CreateUser].policy == JobPolicy()
    assert JobPolicy() == JobPolicy(
        queue="default",
        max_tries=1,
        timeout=300.0,
        retry_on=(Exception,),
        backoff=Backoff(),
        keep_result=None,  # the mediator's keep_result and keep_failed apply
        keep_failed=None,
    )
    assert mediator._registry.requests[DeleteUser].policy.timeout is None


def test_many_notification_handlers_are_allowed(mediator: Mediator) -> None:
    """A notification type takes any number of handlers, kept in registration order."""

    @mediator.handler
    async def first(event: UserCreated, ctx: Context) -> None: ...

    @mediator.handler(queue="emails")
    async def second(event: UserCreated) -> None: ...

    @mediator.handler
    async def third(event: UserCreated, ctx: Context) -> None: ...

    specs = mediator._registry.notifications[UserCreated]
    assert [spec.function for spec in specs] == [first, second, third]
    assert specs[1].policy.queue == "emails"
    assert mediator._registry.by_name == {UserCreated.message_name: UserCreated}


def test_decorators_return_the_function_unchanged(mediator: Mediator) -> None:
    """Both decorator forms hand back the very function they were given."""

    async def create_user(request: CreateUser, ctx: Context) -> UserOut:
        raise NotImplementedError

    async def on_created(event: UserCreated) -> None: ...

    assert mediator.handler(create_user) is create_user
    assert mediator.handler(queue="other")(on_created) is on_created


# Policy validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"max_tries": 0}, "max_tries must be at least 1, got 0"),
        ({"max_tries": -1}, "max_tries must be at least 1, got -1"),
        ({"timeout": 0}, "timeout must be positive or None, got 0.0"),
        ({"timeout": timedelta(seconds=-1)}, "timeout must be positive or None, got -1.0"),
        ({"queue": ""}, "queue must be a non-empty name"),
        ({"keep_result": 0}, "keep_result must be positive or None, got 0.0"),
        ({"keep_failed": timedelta(0)}, "keep_failed must be positive or None, got 0.0"),
    ],
)
def test_invalid_policy_values_raise_value_error(
    mediator: Mediator, options: dict[str, Any], complaint: str
) -> None:
    """Invalid job-policy options raise ValueError as soon as the decorator is called, before any function."""
    with pytest.raises(ValueError, match=re.escape(complaint)):
        mediator.handler(**options)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"max_tries": 0}, "max_tries must be at least 1"),
        ({"timeout": -0.5}, "timeout must be positive or None"),
        ({"queue": ""}, "queue must be a non-empty name"),
        ({"keep_result": -1.0}, "keep_result must be positive"),
    ],
)
def test_job_policy_validates_on_construction(options: dict[str, Any], complaint: str) -> None:
    """JobPolicy built directly applies the same checks as the decorator."""
    with pytest.raises(ValueError, match=re.escape(complaint)):
        JobPolicy(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"initial": -1.0},
        {"factor": 0.5},
        {"maximum": -0.1},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_invalid_backoff_raises_value_error(options: dict[str, float]) -> None:
    """Backoff refuses a negative initial or maximum, a factor below 1, or jitter outside [0, 1]."""
    with pytest.raises(
        ValueError, match=r"Backoff needs initial >= 0, factor >= 1, maximum >= 0 and 0 <= jitter <= 1"
    ):
        Backoff(**options)


def test_backoff_edges_are_valid() -> None:
    """Zero delays, a factor of exactly 1 and jitter of exactly 0 or 1 are all accepted."""
    assert Backoff(initial=0.0, factor=1.0, maximum=0.0, jitter=0.0).delay(5) == 0.0
    assert Backoff(jitter=1.0).jitter == 1.0


def test_backoff_delay_grows_exponentially_up_to_the_cap() -> None:
    """Without jitter, retry n waits initial * factor**(n-1), never more than maximum."""
    backoff = Backoff(initial=1.0, factor=2.0, maximum=10.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_delay_before_first_retry_is_initial() -> None:
    """A retry number below 1 is treated as the first retry rather than shrinking the delay."""
    backoff = Backoff(initial=3.0, factor=2.0, jitter=0.0)
    assert backoff.delay(0) == 3.0
    assert backoff.delay(-4) == 3.0


def test_backoff_jitter_draws_from_the_given_rng() -> None:
    """With jitter, the delay is ceiling * (1 - jitter * draw), the draw taken from the rng passed in."""
    backoff = Backoff(initial=4.0, factor=2.0, maximum=100.0, jitter=0.5)
    draws = random.Random(1234)
    expected = [4.0 * 2 ** (n - 1) * (1 - 0.5 * draws.random()) for n in range(1, 5)]
    rng = random.Random(1234)
    assert [backoff.delay(n, rng) for n in range(1, 5)] == expected


def test_backoff_jitter_stays_within_bounds() -> None:
    """Jittered delays fall between (1 - jitter) * ceiling and the ceiling, with or without an rng."""
    backoff = Backoff(initial=8.0, factor=1.0, maximum=8.0, jitter=0.25)
    rng = random.Random(99)
    delays = [backoff.delay(1, rng) for _ in range(1000)] + [backoff.delay(1) for _ in range(100)]
    assert all(6.0 <= delay <= 8.0 for delay in delays)
    assert min(delays) < 6.5
    assert max(delays) > 7.5


def test_full_jitter_can_reach_zero_but_not_exceed_the_ceiling() -> None:
    """With jitter=1 a delay is anywhere from 0 to the (capped) ceiling."""
    backoff = Backoff(initial=2.0, factor=2.0, maximum=5.0, jitter=1.0)
    rng = random.Random(7)
    delays = [backoff.delay(3, rng) for _ in range(1000)]  # uncapped ceiling 8.0, capped to 5.0
    assert all(0.0 <= delay <= 5.0 for delay in delays)
    assert max(delays) > 4.9
    assert min(delays) < 0.1


class MaybeCount(Request[int | None]):
    pass


def test_handler_may_promise_one_member_of_a_union_response(mediator: Mediator) -> None:
    """A Request[int | None] handler may be annotated `-> int`: it promises less than the request allows."""

    async def count(request: MaybeCount) -> int:
        return 1

    assert mediator.handler(count) is count


def test_handler_annotated_with_a_parametrised_request_is_refused(mediator: Mediator) -> None:
    """`request: Request[UserOut]` names pydantic's generated class, which nothing is ever sent as."""

    async def vague(request: Request[UserOut]) -> UserOut:
        raise NotImplementedError

    with pytest.raises(HandlerRegistrationError, match="must annotate its first parameter"):
        mediator.handler(vague)


def test_malformed_string_annotation_is_a_registration_error(mediator: Mediator) -> None:
    """An annotation string that is not even valid Python is reported like an unresolvable one."""

    async def broken(request: CreateUser) -> UserOut:
        raise NotImplementedError

    broken.__annotations__["request"] = "list["
    with pytest.raises(HandlerRegistrationError, match="cannot be resolved"):
        mediator.handler(broken)


def test_same_notification_handler_twice_is_refused(mediator: Mediator) -> None:
    """Registering one function twice for a notification is an error: it would run twice per event."""

    async def welcome(event: UserCreated) -> None: ...

    mediator.handler(welcome)
    with pytest.raises(HandlerRegistrationError, match="already registered for UserCreated"):
        mediator.handler(welcome)


def test_backoff_delay_stays_at_the_cap_for_huge_retry_numbers() -> None:
    """Far past the cap, the delay stays at the maximum instead of overflowing a float."""
    backoff = Backoff(initial=1.0, factor=2.0, maximum=30.0, jitter=0.0)
    assert backoff.delay(1025) == 30.0
    assert backoff.delay(10**6) == 30.0


class Opaque:
    """A class pydantic can hold but JSON cannot carry."""


class CarriesOpaque(Request[None]):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    thing: Opaque


class CarriesText(Request[None]):
    blob: bytes


class CarriesBase64(Request[None]):
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
    blob: bytes


def test_a_message_json_cannot_carry_is_refused_naming_the_field(mediator: Mediator) -> None:
    """A field of a type JSON cannot describe is refused at registration, not first met at enqueue."""

    async def handle(request: CarriesOpaque) -> None: ...

    with pytest.raises(HandlerRegistrationError, match=r"CarriesOpaque\.thing cannot cross Redis as JSON"):
        mediator.handler(handle)


def test_bytes_kept_as_text_are_refused_and_base64_accepted(mediator: Mediator) -> None:
    """A bytes field must travel as base64, or bytes that are not UTF-8 would fail only at enqueue."""

    async def as_text(request: CarriesText) -> None: ...

    async def as_base64(request: CarriesBase64) -> None: ...

    with pytest.raises(HandlerRegistrationError, match=r"CarriesText\.blob .*ser_json_bytes='base64'"):
        mediator.handler(as_text)
    mediator.handler(as_base64)
    assert (
        CarriesBase64.model_validate_json(CarriesBase64(blob=b"\xff\x00").model_dump_json()).blob
        == b"\xff\x00"
    )


class CarriesPairs(Request[None]):
    seats: dict[tuple[int, int], str]


class CarriesNestedPairs(Request[None]):
    rows: list[dict[tuple[int, int], str]]


def test_dictionaries_keyed_by_what_json_text_cannot_bring_back_are_refused(mediator: Mediator) -> None:
    """A dict keyed by tuples goes out as text keys and cannot come back: refused, nested ones too."""

    async def pairs(request: CarriesPairs) -> None: ...

    async def nested(request: CarriesNestedPairs) -> None: ...

    for handler, field in ((pairs, "CarriesPairs.seats"), (nested, "CarriesNestedPairs.rows")):
        with pytest.raises(
            HandlerRegistrationError, match=rf"{field} cannot cross Redis as JSON: its keys are"
        ):
            mediator.handler(handler)


def test_an_arbitrary_type_is_refused_without_pydantics_misleading_advice(mediator: Mediator) -> None:
    """The refusal says JSON has no form for the type, not to allow arbitrary types (already allowed)."""

    async def handle(request: CarriesOpaque) -> None: ...

    with pytest.raises(HandlerRegistrationError) as caught:
        mediator.handler(handle)
    assert "JSON has no form for Opaque" in str(caught.value)
    assert "arbitrary_types_allowed" not in str(caught.value)
