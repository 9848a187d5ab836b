"""What a message must be to cross Redis: a model every field of which JSON can carry there and back.

`send` runs a request as it is, so a field JSON cannot carry (an arbitrary class, bytes that are not
text) works inline and fails only when the same request is enqueued. Registration checks it up front.
"""

from __future__ import annotations

import collections.abc
import enum
import typing
from typing import Any

from pydantic import TypeAdapter
from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError, PydanticUserError

from ._errors import HandlerRegistrationError


def check_json_round_trip(message_type: type[Any]) -> None:
    """Refuse *message_type* if one of its fields cannot go to JSON and back, naming the field.

    Raises:
        HandlerRegistrationError: a field of a type JSON cannot describe, or bytes kept as UTF-8 text.
    """
    config = getattr(message_type, "model_config", {})
    for name, field in message_type.model_fields.items():
        problem = _problem_of(field.annotation)
        if (
            problem is None
            and config.get("ser_json_bytes", "utf8") == "utf8"
            and _holds_bytes(field.annotation)
        ):
            problem = (
                "bytes go to JSON as UTF-8 text, so other bytes fail at enqueue; declare "
                "model_config = ConfigDict(ser_json_bytes='base64', val_json_bytes='base64')"
            )
        if problem is not None:
            raise HandlerRegistrationError(
                f"{message_type.__qualname__}.{name} cannot cross Redis as JSON: {problem}; jobs carry their "
                "request as JSON, so use a field type JSON can carry (or pass a reference to the data)"
            )


def _problem_of(annotation: Any) -> str | None:
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        adapter.json_schema(mode="validation")
        adapter.json_schema(mode="serialization")
    except (PydanticInvalidForJsonSchema, PydanticSchemaGenerationError, PydanticUserError):
        # pydantic's own advice (allow arbitrary types) would make it worse: JSON still cannot carry it.
        return f"JSON has no form for {_spelled(annotation)}"
    return _key_problem(annotation)


# Dictionary keys that come back from JSON's text keys as what they were.
_TEXT_KEYS = (str, int, float, bool)


def _key_problem(annotation: Any) -> str | None:
    """Return why a dictionary somewhere in *annotation* would not come back from JSON, if one would not."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping) and arguments:
        key = arguments[0]
        plain = key is Any or (isinstance(key, type) and issubclass(key, (*_TEXT_KEYS, enum.Enum)))
        literal = typing.get_origin(key) is typing.Literal
        if not (plain or literal):
            return f"its keys are {_spelled(key)}, but JSON keys are text, which does not turn back into that"
    for argument in arguments:
        problem = _key_problem(argument)
        if problem is not None:
            return problem
    return None


def _spelled(annotation: Any) -> str:
    return (
        annotation.__qualname__ if isinstance(annotation, type) else repr(annotation).replace("typing.", "")
    )


def _holds_bytes(annotation: Any) -> bool:
    try:
        schema = TypeAdapter(annotation).json_schema(mode="serialization")
    except (PydanticInvalidForJsonSchema, PydanticSchemaGenerationError, PydanticUserError):
        return False
    return '"format": "binary"' in repr(schema).replace("'", '"')
