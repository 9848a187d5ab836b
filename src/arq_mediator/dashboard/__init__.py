"""A job dashboard in the browser: overview, queues, jobs by state, job pages, recurring jobs, workers.

`dashboard_app` gives an ASGI app for any ASGI framework; `dashboard_router` and `DashboardPlugin` embed
it in a Litestar app; `RedisDashboardSource` is what they read (a mediator's Redis and its job history).
The web half needs the ``dashboard`` extra (Litestar and Jinja2) and is imported only when one of its
names is first used, so the data model and the store stay usable without a web framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._model import (
    DashboardEvent,
    DashboardSource,
    JobDetail,
    JobState,
    JobStep,
    JobSummary,
    LogLine,
    Page,
    QueueSummary,
    RecurringSummary,
    StateCounts,
    ThroughputPoint,
    WorkerSummary,
)
from ._store import RedisDashboardSource

if TYPE_CHECKING:
    from ._access import Authorize, allow_networks
    from ._app import DashboardPlugin, dashboard_app, dashboard_router

__all__ = [
    "Authorize",
    "DashboardEvent",
    "DashboardPlugin",
    "DashboardSource",
    "JobDetail",
    "JobState",
    "JobStep",
    "JobSummary",
    "LogLine",
    "Page",
    "QueueSummary",
    "RecurringSummary",
    "RedisDashboardSource",
    "StateCounts",
    "ThroughputPoint",
    "WorkerSummary",
    "allow_networks",
    "dashboard_app",
    "dashboard_router",
]

_WEB = {
    "DashboardPlugin": "_app",
    "dashboard_app": "_app",
    "dashboard_router": "_app",
    "Authorize": "_access",
    "allow_networks": "_access",
}


def __getattr__(name: str) -> Any:
    """Import the web half (Litestar, Jinja2) on first use of one of its names."""
    if name not in _WEB:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_WEB[name]}"), name)
