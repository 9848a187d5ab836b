"""The OpenAPI document as the request and response models define it, and the UIs that render it.

Litestar writes its own JSON Schema for pydantic models, and drops what it does not map: a model's
``extra="forbid"`` (``additionalProperties: false``), a field's ``pattern``, and it turns every union into
``oneOf`` (which an integer matching both ``integer`` and ``number`` violates). Here every model a route
takes or returns is described by pydantic itself, the same code that validates and serializes it, so the
document cannot say something the API does not do. The document also gets the links between operations
(create a user, then read it), which Litestar has no parameter for.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeGuard

from litestar import Litestar, Request, Response, Router
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RedocRenderPlugin,
    ScalarRenderPlugin,
    SwaggerRenderPlugin,
)
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from services.api.schemas import ErrorOut

Mode = Literal["validation", "serialization"]
_COMPONENTS = "#/components/schemas/{model}"

_PROBLEMS = {
    400: "Bad input: `extra` names each field and what is wrong with it",
    404: "No such resource",
    409: "Conflicts with what exists: the email is taken",
    415: "The body is not JSON",
    429: "Over this client's budget of jobs per minute; `Retry-After` says when to try again",
    503: "Redis or the database is unavailable; `Retry-After` says when to try again",
}

# (operation, status) -> links from its answer to the operations that read what it made.
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, str]]] = {
    ("post", "/api/users", "201"): {"ReadUser": ("get", "/api/users/{user_id}", "$response.body#/id")},
    ("post", "/api/reports", "202"): {
        "ReadReportJob": ("get", "/api/jobs/{job_id}", "$response.body#/jobId")
    },
    ("post", "/api/distributeddemo/stress-test", "200"): {
        "ReadFirstJob": ("get", "/api/jobs/{job_id}", "$response.body#/jobs/0")
    },
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """Return the OpenAPI responses for error *statuses*, each with the error body's schema."""
    return {
        status: ResponseSpec(data_container=ErrorOut, description=_PROBLEMS[status], generate_examples=False)
        for status in statuses
    }


def contract_document(app: Litestar, document: dict[str, Any]) -> dict[str, Any]:
    """Return *document* with each model's schema written by pydantic and the links between operations."""
    document = copy.deepcopy(document)
    models = dict(_route_models(app))
    if models:
        _, definitions = models_json_schema(list(models.items()), by_alias=True, ref_template=_COMPONENTS)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(definitions.get("$defs", {}))
    for (method, path, status), links in LINKS.items():
        response = document["paths"][path][method]["responses"][status]
        response["links"] = {
            name: {
                "operationId": document["paths"][target_path][target_method]["operationId"],
                "parameters": {_path_parameter(target_path): expression},
            }
            for name, (target_method, target_path, expression) in links.items()
        }
    return document


def _path_parameter(path: str) -> str:
    return path.rsplit("{", 1)[1].rstrip("}")


def _route_models(app: Litestar) -> Iterator[tuple[type[BaseModel], Mode]]:
    """Yield every pydantic model a documented route takes (validation) or answers with (serialization)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            yield from _handler_models(handler)


def _handler_models(handler: HTTPRouteHandler) -> Iterator[tuple[type[BaseModel], Mode]]:
    signature = handler.parsed_fn_signature
    body = signature.parameters.get("data")
    if body is not None and _is_model(body.annotation):
        yield body.annotation, "validation"
    returned = signature.return_type
    if returned.is_subclass_of(Response) and returned.inner_types:
        returned = returned.inner_types[0]
    if _is_model(returned.annotation):
        yield returned.annotation, "serialization"
    for spec in (handler.responses or {}).values():
        if _is_model(spec.data_container):
            yield spec.data_container, "serialization"


def _is_model(annotation: object) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class _ContractRendering(OpenAPIRenderPlugin):
    """Renders the contract document instead of Litestar's own."""

    _document: dict[str, Any] | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """Render the document with the models' own schemas and the links."""
        if self._document is None:
            self._document = contract_document(request.app, openapi_schema)
        return super().render(request, self._document)  # type: ignore[safe-super]  # a concrete plugin follows


class ContractJson(_ContractRendering, JsonRenderPlugin):
    """``/schema/openapi.json``."""


class ContractSwagger(_ContractRendering, SwaggerRenderPlugin):
    """Swagger UI, from the JS and CSS the ``swagger-ui-py`` package ships when it is installed.

    The page then loads nothing from another origin and works offline; without the package it falls
    back to Litestar's CDN links.
    """

    ASSETS = "/assets/swagger-ui"

    def __init__(self, schema_path: str = "/schema") -> None:
        self.assets = swagger_ui_assets()
        if self.assets is None:
            super().__init__()
            return
        base = f"{schema_path}{self.ASSETS}"
        super().__init__(
            js_url=f"{base}/swagger-ui-bundle.js",
            css_url=f"{base}/swagger-ui.css",
            standalone_preset_js_url=f"{base}/swagger-ui-standalone-preset.js",
            favicon="",  # Litestar's default is an image on a CDN
        )

    def receive_router(self, router: Router) -> None:
        """Serve the packaged assets beside the page."""
        if self.assets is not None:
            router.register(
                create_static_files_router(self.ASSETS, directories=[self.assets], include_in_schema=False)
            )


def swagger_ui_assets() -> Path | None:
    """Return the folder of Swagger UI's JS and CSS in the ``swagger-ui-py`` package, or None without it."""
    # Found without importing the package, whose handlers for other frameworks this app does not need.
    spec = importlib.util.find_spec("swagger_ui")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        static = Path(folder) / "static"
        if (static / "swagger-ui-bundle.js").is_file():
            return static
    return None


# Scalar's and ReDoc's published browser builds, vendored with their licences (static/vendor/README.md).
STATIC = Path(__file__).resolve().parent / "static"
ASSETS = "/assets/ui"
SCALAR = "vendor/scalar-api-reference-1.46.4/standalone.js"
REDOC = "vendor/redoc-2.5.4/redoc.standalone.js"


def _serve_static(router: Router) -> None:
    """Serve the API's own UI assets under the schema router, once however many UIs ask."""
    if any(getattr(route, "path", "").startswith(ASSETS) for route in router.routes):
        return
    router.register(create_static_files_router(ASSETS, directories=[STATIC], include_in_schema=False))


class ContractScalar(_ContractRendering, ScalarRenderPlugin):
    """Scalar, from the vendored build: no CDN script, theme or web fonts, so it works offline."""

    def __init__(self, schema_path: str = "/schema") -> None:
        base = f"{schema_path}{ASSETS}"
        super().__init__(
            js_url=f"{base}/{SCALAR}",
            css_url=f"{base}/scalar.css",
            favicon="",
            # Scalar loads its Inter and mono fonts from its own site, and on localhost turns on an "AI
            # agent" that calls its own servers, unless told not to.
            options={"withDefaultFonts": False, "agent": {"disabled": True}},
        )

    def receive_router(self, router: Router) -> None:
        """Serve the vendored script beside the page."""
        _serve_static(router)


class ContractRedoc(_ContractRendering, RedocRenderPlugin):
    """ReDoc, from the vendored build and without Google Fonts, so it works offline.

    ReDoc's sidebar always shows its maker's logo from their CDN; the page's policy allows images from
    this origin only, so the browser never asks for it (and ReDoc drops the broken image).
    """

    POLICY = b'<meta http-equiv="Content-Security-Policy" content="img-src \'self\' data: blob:">'

    def __init__(self, schema_path: str = "/schema") -> None:
        super().__init__(js_url=f"{schema_path}{ASSETS}/{REDOC}", google_fonts=False, favicon="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """Render ReDoc's page with the image policy first in its head."""
        return super().render(request, openapi_schema).replace(b"<head>", b"<head>" + self.POLICY, 1)

    def receive_router(self, router: Router) -> None:
        """Serve the vendored script beside the page."""
        _serve_static(router)
