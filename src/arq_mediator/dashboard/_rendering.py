"""The dashboard's settings as its routes see them, and turning a template into a response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from litestar import Request, Response
from litestar.datastructures import Cookie

from . import _csrf
from ._access import Authorize
from ._format import FILTERS
from ._live import EventHub
from ._model import DashboardSource, JobState

T = TypeVar("T")

# Everything a page loads comes from the dashboard's own origin; nothing may frame it.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

# Seconds the job lists' filter choices (queue names, request types) are reused before being read again.
FILTERS_TTL = 10.0
# Seconds the per-hour and per-day graphs are reused: their bars move slowly, and they cost the most.
HISTORY_TTL = 30.0

# What a person may do with jobs in each state, one job or all of a state (and queue) at once.
ACTIONS: dict[JobState, tuple[str, ...]] = {
    JobState.ENQUEUED: ("delete",),
    JobState.SCHEDULED: ("requeue", "delete"),
    JobState.RUNNING: ("abort",),
    JobState.RETRYING: ("requeue", "delete"),
    JobState.SUCCEEDED: ("requeue", "delete"),
    JobState.FAILED: ("requeue", "delete"),
    JobState.ABORTED: ("requeue", "delete"),
}


def _templates() -> Environment:
    environment = Environment(
        loader=PackageLoader("arq_mediator.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the templates ship in the package: no need to stat them on every page
    )
    environment.filters.update(FILTERS)
    return environment


@dataclass(eq=False)
class Dashboard:
    """One mounted dashboard: where its data comes from, who may use it and what it may do.

    Args:
        source: Reads the jobs and does the actions.
        path: Where the dashboard is mounted, as its requests' paths start (``""`` at the root).
        authorize: Decides who may see the dashboard; ``None`` admits only loopback peers.
        read_only: Hide every action and refuse it with 403.
        jaeger_url: The Jaeger UI's base URL, to link each job's trace id to its trace.
    """

    source: DashboardSource
    path: str
    authorize: Authorize | None = None
    read_only: bool = False
    jaeger_url: str | None = None
    hub: EventHub = field(init=False)
    templates: Environment = field(init=False, default_factory=_templates)
    _reused: dict[str, tuple[float, Any]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.hub = EventHub(self.source)

    async def reused(self, key: str, ttl: float, read: Callable[[], Awaitable[T]]) -> T:
        """Return what *read* returned under *key* less than *ttl* seconds ago, or read it again.

        For what changes slowly and costs the most to read: the job lists' filter choices, and the
        per-hour and per-day graphs (the live per-second graph and the counts are always read).
        """
        now = time.monotonic()
        held = self._reused.get(key)
        if held is None or now - held[0] > ttl:
            held = self._reused[key] = (now, await read())
        value: T = held[1]
        return value

    async def filter_options(self) -> tuple[list[str], list[str]]:
        """Return the queue names and request types a job list can be filtered by."""

        async def read() -> tuple[list[str], list[str]]:
            queues, types = await asyncio.gather(self.source.queues(), self.source.request_types())
            return [queue.name for queue in queues], types

        return await self.reused("filters", FILTERS_TTL, read)

    def trace_link(self, trace_id: str | None) -> str | None:
        """Return the Jaeger URL of *trace_id* when a Jaeger URL is configured."""
        if not trace_id or not self.jaeger_url:
            return None
        return f"{self.jaeger_url.rstrip('/')}/trace/{trace_id}"

    def render(
        self, request: Request[Any, Any, Any], template: str, *, status: int = 200, **context: Any
    ) -> Response[str]:
        """Render *template* with *context* and what every page needs (links, CSRF token, mode)."""
        # A host framework that mounts the dashboard passes its mount point as the ASGI root path.
        base = request.scope.get("root_path", "").rstrip("/") + self.path
        token, cookie = _csrf.token_for(request, base or "/")
        html = self.templates.get_template(template).render(
            base=base,
            read_only=self.read_only,
            csrf_field=_csrf.FIELD,
            csrf_token=token,
            states=list(JobState),
            actions=ACTIONS,
            page_path=request.url.path,
            **context,
        )
        cookies: list[Cookie] = [cookie] if cookie is not None else []
        return Response(
            html,
            status_code=status,
            media_type="text/html",
            cookies=cookies,
            headers={"Cache-Control": "no-store"},
        )
