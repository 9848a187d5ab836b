"""Live updates: one subscription to the source's events per dashboard, fanned out to every open page.

A browser holds an ``EventSource`` on the dashboard's ``events`` URL; each change is sent to it as an SSE
``change`` event and the page re-reads the parts it shows. The stream ends by itself after a while
(``bye``) and the browser reconnects at once, so an open tab never keeps a server from shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar.response import ServerSentEventMessage

from ._model import DashboardEvent, DashboardSource

logger = logging.getLogger("arq_mediator.dashboard")

KEEP_ALIVE = 10.0
# Shorter than the API's graceful-shutdown window (20 s), so an open tab never holds a stop up.
STREAM_LIFETIME = 15.0
RECONNECT_MS = 1000
# A page that cannot keep up loses events, not memory: it re-reads whole regions on the next one anyway.
BACKLOG = 64


class EventHub:
    """Read *source*'s events while at least one page listens, and hand each to every listener."""

    def __init__(self, source: DashboardSource) -> None:
        self._source = source
        self._listeners: set[asyncio.Queue[DashboardEvent | None]] = set()
        self._pump: asyncio.Task[None] | None = None

    @property
    def listeners(self) -> int:
        """How many pages listen now."""
        return len(self._listeners)

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[DashboardEvent | None]]:
        """Yield a queue of events for one page; ``None`` in it means the feed ended."""
        queue: asyncio.Queue[DashboardEvent | None] = asyncio.Queue(BACKLOG)
        self._listeners.add(queue)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._read(), name="arq-mediator dashboard events")
        try:
            yield queue
        finally:
            self._listeners.discard(queue)
            if not self._listeners and self._pump is not None:
                pump, self._pump = self._pump, None
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

    async def _read(self) -> None:
        try:
            async for event in self._source.events():
                for queue in list(self._listeners):
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait(event)
        except Exception:
            # The source is meant to reconnect by itself; if it gives up, the pages reconnect and retry.
            logger.exception("the dashboard's event feed failed")
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)


def encode(event: DashboardEvent) -> str:
    """Return *event* as the JSON the page's script reads."""
    return json.dumps(
        {
            "kind": event.kind,
            "job_id": event.job_id,
            "state": event.state.value if event.state is not None else None,
            "queue": event.queue,
        }
    )


async def stream(
    hub: EventHub, *, lifetime: float = STREAM_LIFETIME, keep_alive: float = KEEP_ALIVE
) -> AsyncIterator[ServerSentEventMessage]:
    """Yield one page's server-sent events: ``hello``, each ``change``, keep-alives, then ``bye``.

    ``hello`` goes out once the page is listening, so a page that re-reads itself on ``hello`` misses
    nothing that changes after that read (except while the hub's own subscription is being made, which
    the page covers by reading itself once more shortly after).
    """
    loop = asyncio.get_running_loop()
    ends = loop.time() + lifetime
    async with hub.listen() as queue:
        yield ServerSentEventMessage(event="hello", data="connected", retry=RECONNECT_MS)
        while (left := ends - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(queue.get(), min(keep_alive, left))
            except TimeoutError:
                yield ServerSentEventMessage(comment="keep-alive")
                continue
            if event is None:
                return
            yield ServerSentEventMessage(event="change", data=encode(event))
    yield ServerSentEventMessage(event="bye", data="reconnect")
