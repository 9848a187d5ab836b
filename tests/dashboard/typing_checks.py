"""The dashboard's public types, checked by mypy --strict (not a pytest module).

The `# type: ignore[...]` lines are expected errors, and mypy --strict reports an ignore that stops being
needed, so each fails the type check if its error goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_type

from litestar import Router
from litestar.types import ASGIApp

from arq_mediator import Mediator
from arq_mediator.dashboard import DashboardPlugin, allow_networks, dashboard_app, dashboard_router


def typed_construction(mediator: Mediator) -> None:
    """Each way of serving the dashboard takes the same keywords and returns what its name says."""
    assert_type(dashboard_app(mediator, authorize=allow_networks("10.0.0.0/8")), ASGIApp)
    assert_type(dashboard_router(mediator, path="/ops/jobs", read_only=True), Router)
    assert_type(DashboardPlugin(mediator, path="/ops/jobs", jaeger_url="http://jaeger:16686").router, Router)
    if TYPE_CHECKING:
        DashboardPlugin(mediator, pth="/ops/jobs")  # type: ignore[call-arg]
        DashboardPlugin(mediator, read_only="yes")  # type: ignore[arg-type]
