"""How the API answers errors: 400s naming fields as clients spell them, 503s for a lost database, and a
logged traceback for every 5xx."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, SerializationException, ValidationException
from litestar.exceptions.responses import create_exception_response
from litestar.params import ParameterKwarg
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import Scope

logger = logging.getLogger("services.api")


def name_fields_as_sent(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Answer Litestar's 400 naming each field as the client spells it (``jobCount``, not ``job_count``)."""
    assert isinstance(error, ValidationException)
    parameters = request.route_handler.parsed_fn_signature.parameters
    for problem in error.extra if isinstance(error.extra, list) else ():
        field = parameters.get(problem.get("key", "")) if isinstance(problem, dict) else None
        if (
            field is not None
            and isinstance(field.kwarg_definition, ParameterKwarg)
            and field.kwarg_definition.name
        ):
            problem["key"] = field.kwarg_definition.name
    return create_exception_response(request, error)


def explain_unreadable_body(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Say plainly that a body Litestar could not decode is not valid JSON (msgspec alone may not)."""
    assert isinstance(error, ClientException)
    if isinstance(error.__cause__, SerializationException):
        error.detail = f"the request body is not valid JSON: {error.detail}"
    return create_exception_response(request, error)


def database_unavailable(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, str]]:
    """Answer 503 with ``Retry-After`` naming the database error's first line."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return Response(
        {"detail": f"the database is unavailable: {reason}; try again shortly"},
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


async def log_server_errors(error: Exception, scope: Scope) -> None:
    """Log every exception that ends in a 5xx with its traceback; refusals of bad input are not errors."""
    status = error.status_code if isinstance(error, HTTPException) else HTTP_500_INTERNAL_SERVER_ERROR
    if status >= HTTP_500_INTERNAL_SERVER_ERROR:
        method = scope.get("method", "")
        logger.error(
            "%s %s failed with %s", method, scope.get("path", ""), type(error).__name__, exc_info=error
        )
