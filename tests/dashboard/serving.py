"""Serve an ASGI app on a real socket for a test, so the dashboard sees a real peer address."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from litestar.types import ASGIApp

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@asynccontextmanager
async def serving(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[int]:
    """Serve *app* with uvicorn on *port* (a free one by default) of *host* for the block; yield the port."""
    async with _served(uvicorn.Config(app, host=host, port=port)) as server:
        yield server.servers[0].sockets[0].getsockname()[1]


@asynccontextmanager
async def serving_unix(app: ASGIApp, path: str) -> AsyncIterator[None]:
    """Serve *app* with uvicorn on the Unix socket at *path* for the block (a request there has no peer)."""
    async with _served(uvicorn.Config(app, uds=path)):
        yield


@asynccontextmanager
async def _served(config: uvicorn.Config) -> AsyncIterator[uvicorn.Server]:
    config.log_level = "warning"
    config.lifespan = "on"
    # An open event stream would hold a graceful shutdown; the streams end by themselves, tests need not wait.
    config.timeout_graceful_shutdown = 2
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task


def outside_address() -> str | None:
    """Return an address of this machine other than loopback, to be a non-local peer from; None if none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, the kernel only picks a route
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def token_in(html: str) -> str:
    """Return the CSRF token written into a page's forms."""
    found = TOKEN.search(html)
    assert found is not None, "the page has no action form"
    return found.group(1)


async def get_token(client: httpx.AsyncClient, path: str) -> str:
    """Load *path* (setting the token cookie) and return the token of its forms."""
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return token_in(response.text)
