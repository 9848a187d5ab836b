"""Paths and query parameter names that match in any letter case, as in the original ASP.NET Core app."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.params import ParameterKwarg
from litestar.routes import HTTPRoute

if TYPE_CHECKING:
    from litestar.types import Receive, Scope, Send


class CaseInsensitiveLitestar(Litestar):
    """A Litestar app whose route paths and query parameter names match in any letter case.

    Only the literal parts of a path are folded to the route's spelling; path parameters (job ids) keep
    theirs. Query parameter names are folded to the spelling the route declares (``jobcount=5`` binds
    to ``jobCount``), so a parameter is never silently ignored for its case; values keep theirs.
    """

    _spelling: _Spelling | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        """Rewrite the path and query names to their route's spelling, then handle the request as usual."""
        if scope["type"] in ("http", "websocket"):
            if self._spelling is None:
                self._spelling = _Spelling(self.routes)
            path, template = self._spelling.fold_path(scope["path"])
            scope["path"] = path
            if template is not None and scope.get("query_string"):
                scope["query_string"] = self._spelling.fold_query(template, scope["query_string"])
        await super().__call__(scope, receive, send)


def query_parameter_names(handler: HTTPRouteHandler, path_parameters: Iterable[str]) -> list[str]:
    """Return the query parameter names *handler* declares, spelled as clients send them."""
    names = []
    for field_name, field in handler.parsed_fn_signature.parameters.items():
        kwarg = field.kwarg_definition
        if not isinstance(kwarg, ParameterKwarg) or kwarg.header or kwarg.cookie:
            continue
        name = kwarg.query or kwarg.name or field_name
        if name not in path_parameters:
            names.append(name)
    return names


class _Spelling:
    """Map a path to the route it matches case-insensitively, and query names to that route's spelling."""

    def __init__(self, routes: Iterable[object]) -> None:
        self._static: dict[str, str] = {}
        self._spelled: set[str] = set()
        self._templates: list[tuple[str, list[str | None]]] = []
        self._query_names: dict[str, dict[str, str]] = {}
        for route in routes:
            template = getattr(route, "path", "")
            self._spelled.add(template)
            if "{" not in template:
                self._static[template.lower()] = template
            elif ":path}" not in template:
                parts = [None if part.startswith("{") else part for part in template.split("/")]
                self._templates.append((template, parts))
            if isinstance(route, HTTPRoute):
                names = self._query_names.setdefault(template, {})
                for handler in route.route_handlers:
                    for name in query_parameter_names(handler, route.path_parameters):
                        names[name.lower()] = name

    def fold_path(self, path: str) -> tuple[str, str | None]:
        """Return *path* spelled as the route it matches and that route's template, or *path* and None."""
        if path in self._spelled:
            return path, path
        folded = self._static.get(path.lower())
        if folded is not None:
            return folded, folded
        parts = path.split("/")
        for template, literals in self._templates:
            if len(literals) == len(parts) and all(
                literal is None or literal.lower() == part.lower()
                for literal, part in zip(literals, parts, strict=True)
            ):
                pairs = zip(literals, parts, strict=True)
                return "/".join(part if literal is None else literal for literal, part in pairs), template
        return path, None

    def fold_query(self, template: str, query: bytes) -> bytes:
        """Return *query* with each parameter name the route declares in another case spelled as declared."""
        names = self._query_names.get(template)
        if not names:
            return query
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
        if all(names.get(key.lower(), key) == key for key, _ in pairs):
            return query  # nothing to fold: leave the bytes exactly as sent
        folded = [(names.get(key.lower(), key), value) for key, value in pairs]
        return urlencode(folded, encoding="latin-1").encode("latin-1")
