"""What a message must be to cross Redis: a model every field of which JSON can carry there and back.

`send` runs a request as it is, so a field JSON cannot carry (an arbitrary class, bytes that are not
text) works inline and fails only when the same request is enqueued. Registration checks it up front.
"""

from __future__ import annotations

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
                f"{message_type.__qualname__}.{name} cannot cross Redis as JSON: {problem}. Jobs carry their "
                "request as JSON; use a field type JSON can carry (or pass a reference to the data)"
            )


def _problem_of(annotation: Any) -> str | None:
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        adapter.json_schema(mode="validation")
        adapter.json_schema(mode="serialization")
    except (PydanticInvalidForJsonSchema, PydanticSchemaGenerationError, PydanticUserError) as error:
        return str(error).splitlines()[0]
    return None


def _holds_bytes(annotation: Any) -> bool:
    try:
        schema = TypeAdapter(annotation).json_schema(mode="serialization")
    except (PydanticInvalidForJsonSchema, PydanticSchemaGenerationError, PydanticUserError):
        return False
    return '"format": "binary"' in repr(schema).replace("'", '"')
