"""What Litestar lets through and the OpenAPI document does not: checked before a route handler runs.

Litestar converts query and path values leniently (``jobCount=5.0`` or ``1e4`` become integers), takes
a form or XML body for JSON and fails on it with "JSON is malformed", and names a missing body ``'data'``.
The route signatures say what is meant (an ``int`` parameter, a ``data`` body), so these rules read them
rather than a list of their own: a new route is covered as it is written.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import ParameterKwarg
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)


class UnsupportedMediaType(HTTPException):
    """The body is not JSON, the only media type the API reads."""

    status_code = HTTP_415_UNSUPPORTED_MEDIA_TYPE


async def check_input(request: Request[Any, Any, Any]) -> None:
    """Refuse what the route's signature does not allow and Litestar would let through or misname.

    Raises:
        ValidationException: a whole-number parameter has a fraction or exponent (400, naming it), or the
            JSON body is missing (400, saying what to send).
        UnsupportedMediaType: the body is declared as something other than JSON (415).
    """
    handler = request.route_handler
    _check_whole_numbers(request, handler)
    if "data" in handler.parsed_fn_signature.parameters:
        await _check_json_body(request, handler)


def _check_whole_numbers(request: Request[Any, Any, Any], handler: HTTPRouteHandler) -> None:
    problems = []
    for field_name, field in handler.parsed_fn_signature.parameters.items():
        kwarg = field.kwarg_definition
        if field.annotation is not int or not isinstance(kwarg, ParameterKwarg):
            continue
        name = kwarg.query or kwarg.name or field_name
        if name in request.path_params:
            source, values = "path", [str(request.path_params[name])]
        else:
            source, values = "query", request.query_params.getall(name, [])
        for value in values:
            if not _WHOLE_NUMBER.fullmatch(value):
                problems.append(
                    {"key": name, "source": source, "message": f"Expected a whole number, got {value!r}"}
                )
    if problems:
        raise ValidationException(
            f"Validation failed for {request.method} {request.url.path}", extra=problems
        )


async def _check_json_body(request: Request[Any, Any, Any], handler: HTTPRouteHandler) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
    # No Content-Type at all is read as JSON, which is what a bare `curl --data '{...}'` would mean.
    if media_type and not _JSON_MEDIA_TYPE.fullmatch(media_type):
        raise UnsupportedMediaType(
            detail=f"the request body is {media_type}; send JSON with Content-Type: application/json"
        )
    if not (await request.body()).strip():
        fields = ", ".join(_body_fields(handler))
        raise ValidationException(
            f"the request body is missing: send a JSON object with {fields}",
            extra=[{"key": "body", "source": "body", "message": "a JSON object is required"}],
        )


def _body_fields(handler: HTTPRouteHandler) -> list[str]:
    model = handler.parsed_fn_signature.parameters["data"].annotation
    fields = getattr(model, "model_fields", {})
    return [field.alias or name for name, field in fields.items()] or ["its fields"]
