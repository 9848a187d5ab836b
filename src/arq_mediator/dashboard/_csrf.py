"""Cross-site request forgery protection for the dashboard's actions: a double-submit token.

Each page sets a random token in a cookie only this site can read (``SameSite=Strict``, ``HttpOnly``,
scoped to the dashboard's path) and writes the same token into every form. An action is done only when
the form's token equals the cookie's, which a page of another origin can neither read nor set; a request
whose ``Origin`` or ``Sec-Fetch-Site`` names another site is refused before that. This lives in the
dashboard rather than in Litestar's app-wide CSRF middleware so that mounting the dashboard changes
nothing for the rest of the host app.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from litestar import Request
from litestar.datastructures import Cookie

from ._access import refuse

COOKIE = "arqm_dashboard_csrf"
FIELD = "csrf_token"
_TOKEN_BYTES = 32
_MAX_TOKEN_LENGTH = 128


def token_for(request: Request[Any, Any, Any], path: str) -> tuple[str, Cookie | None]:
    """Return the token *request* already holds, or a new one with the cookie (for *path*) that sets it."""
    held = request.cookies.get(COOKIE, "")
    if 0 < len(held) <= _MAX_TOKEN_LENGTH:
        return held, None
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    return token, new_cookie(token, path=path, secure=request.url.scheme == "https")


def new_cookie(token: str, *, path: str, secure: bool) -> Cookie:
    """Return the cookie that carries *token* for the dashboard under *path*."""
    return Cookie(key=COOKIE, value=token, path=path, httponly=True, samesite="strict", secure=secure)


def check(request: Request[Any, Any, Any], submitted: str | None) -> None:
    """Raise a 403 unless *request* comes from this site and *submitted* matches its cookie's token."""
    if request.headers.get("sec-fetch-site", "same-origin") not in {"same-origin", "none"}:
        raise refuse("this action must be sent from the dashboard's own pages")
    origin = request.headers.get("origin")
    if origin is not None and not _same_origin(origin, request):
        raise refuse("this action must be sent from the dashboard's own pages")
    held = request.cookies.get(COOKIE, "")
    if not held or not submitted or not hmac.compare_digest(held.encode(), submitted.encode()):
        raise refuse("the form's security token is missing or stale: reload the page and try again")


def _same_origin(origin: str, request: Request[Any, Any, Any]) -> bool:
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.netloc == host and parts.scheme == request.url.scheme
