"""Live updates: the event stream a page listens to, and the one subscription shared by all pages."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from arq_mediator.dashboard import DashboardEvent, JobState, dashboard_app
from arq_mediator.dashboard._live import EventHub, stream
from tests.dashboard.fakes import FakeSource
from tests.dashboard.serving import serving


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """Yield (event, data) pairs from a server-sent event stream's lines."""
    name, data = "message", ""
    async for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and data:
            yield name, data
            name, data = "message", ""


async def test_a_change_reaches_an_open_page_as_an_event() -> None:
    """A job event from the source arrives on /events as a ``change`` carrying the job and its state."""
    source = FakeSource()
    async with (
        serving(dashboard_app(source)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
        client.stream("GET", "/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response.aiter_lines())
        async with asyncio.timeout(10):
            assert await anext(events) == ("hello", "connected")
            await source.feed.put(
                DashboardEvent(kind="job", job_id="j1", state=JobState.SUCCEEDED, queue="q")
            )
            name, data = await anext(events)
    assert name == "change"
    assert json.loads(data) == {"kind": "job", "job_id": "j1", "state": "succeeded", "queue": "q"}


async def test_pages_share_one_subscription_that_ends_with_the_last() -> None:
    """Two listeners get every event through one subscription; it is dropped when both leave."""
    source = FakeSource()
    hub = EventHub(source)
    event = DashboardEvent(kind="worker")
    async with hub.listen() as first, hub.listen() as second:
        await source.feed.put(event)
        async with asyncio.timeout(5):
            assert await first.get() is event
            assert await second.get() is event
        assert source.subscriptions == 1
    assert hub.listeners == 0
    async with hub.listen() as third:
        await source.feed.put(event)
        async with asyncio.timeout(5):
            assert await third.get() is event
    assert source.subscriptions == 2


async def test_a_stream_says_bye_after_its_lifetime_so_servers_can_stop() -> None:
    """A stream sends keep-alives while idle and ends with ``bye`` once its lifetime is over."""
    hub = EventHub(FakeSource())
    async with asyncio.timeout(10):
        messages = [message async for message in stream(hub, lifetime=0.3, keep_alive=0.1)]
    assert messages[0].event == "hello"
    assert messages[-1].event == "bye"
    assert any(message.comment == "keep-alive" for message in messages)
    assert hub.listeners == 0


async def test_a_failing_feed_ends_the_streams_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """When the source's events fail, every open stream ends (the page reconnects) and the log says why."""

    class Broken(FakeSource):
        async def events(self) -> AsyncIterator[DashboardEvent]:
            if self.subscriptions >= 0:  # always: the yield below only makes this an async generator
                raise RuntimeError("feed broke")
            yield DashboardEvent(kind="job")

    hub = EventHub(Broken())
    async with asyncio.timeout(10):
        messages = [message async for message in stream(hub, lifetime=30)]
    assert [message.event for message in messages] == ["hello"]
    assert "feed broke" in caplog.text


def test_the_model_imports_without_a_web_framework() -> None:
    """``import arq_mediator.dashboard`` (the data model) imports neither Litestar nor Jinja2."""
    script = (
        "import sys, arq_mediator.dashboard as d\n"
        "assert d.JobState.FAILED\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'litestar', 'jinja2'}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert completed.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error() -> None:
    """Asking the package for a name it does not have fails as usual."""
    import arq_mediator.dashboard as dashboard

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = dashboard.nothing
