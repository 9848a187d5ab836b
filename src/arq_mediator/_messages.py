"""The message types: `Request[R]` (one handler, typed response) and `Notification` (many handlers)."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

R = TypeVar("R")


class Message(BaseModel):
    """Common base of requests and notifications: a validated pydantic model with a stable wire name.

    The wire name identifies the type inside a job envelope, so a worker finds the same class the producer
    used. It defaults to ``module.QualName``; set the class attribute ``message_name`` to keep it stable
    across a rename or a move.
    """

    model_config = ConfigDict(extra="forbid")

    message_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only a name declared on this very class counts; an inherited one would make two types collide.
        if "message_name" not in cls.__dict__:
            cls.message_name = f"{cls.__module__}.{cls.__qualname__}"


class Request(Message, Generic[R]):
    """A request handled by exactly one handler, which returns an `R`.

    Subclass it with the response type: ``class CreateUser(Request[UserOut]): ...``.
    """


class Notification(Message):
    """An event handled by zero or more handlers, none of which returns a value."""


def response_type_of(request_type: type[Request[Any]]) -> Any:
    """Return the `R` a request class declared through ``Request[R]``.

    Raises:
        TypeError: the class derives from the bare ``Request`` and so declares no response type.
    """
    for klass in request_type.__mro__:
        metadata = getattr(klass, "__pydantic_generic_metadata__", None)
        if metadata and metadata["origin"] is Request and metadata["args"]:
            return metadata["args"][0]
    raise TypeError(
        f"{request_type.__qualname__} derives from the bare Request; "
        f"declare its response type, e.g. class {request_type.__name__}(Request[MyResponse])"
    )
