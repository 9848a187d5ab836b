"""A redis-server of a benchmark's own, on a free port, so what it measures is not shared with anyone."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import Redis

from tests.processes import free_port


@contextmanager
def private_redis_server() -> Iterator[str]:
    """Start a redis-server (no persistence) on a free port; yield its URL once it answers; stop it by PID."""
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        command = [
            "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            asyncio.run(_when_ready(url))
            yield url
        finally:
            server.terminate()
            server.wait(timeout=10)


async def _when_ready(url: str) -> None:
    client: Redis = Redis.from_url(url)
    for _ in range(100):
        try:
            await client.ping()
            break
        except Exception:  # refused while the server starts
            await asyncio.sleep(0.05)
    await client.aclose()
