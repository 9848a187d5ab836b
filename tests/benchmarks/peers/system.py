"""What the benchmark needs of each job system: how to start its worker and a client to enqueue with."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

# Await one job's result, within the given seconds; return the time the job started.
Waiter = Callable[[float], Awaitable[float]]
PRELOAD_WIDTH = 50  # enqueues in flight at once while filling a queue


class PeerClient(Protocol):
    """The parent's side of one system, on one Redis."""

    async def open(self) -> None:
        """Connect."""

    async def enqueue(self, kind: str, sent: float) -> Waiter:
        """Enqueue one job with body *kind* sent at *sent*; return how to await its result."""

    async def preload(self, kind: str, count: int) -> None:
        """Fill the queue with *count* jobs of body *kind* the fastest way the system offers."""

    async def after_flush(self) -> None:
        """Recreate what the system expects to exist in Redis after the parent flushed it."""

    async def close(self) -> None:
        """Disconnect."""


@dataclass(frozen=True)
class Variant:
    """One system with one group of settings: how its worker starts and how the parent talks to it."""

    name: str
    system: str
    fast: bool
    settings: str  # what differs from the system's defaults, for the report
    command: Sequence[str]
    client: Callable[[str], PeerClient]
    # Polls at 0.5 s: fewer latency samples (each costs ~0.5 s) and shorter drains (~200 jobs/s).
    slow_polls: bool = False


def python_command(code: str) -> list[str]:
    """Return a command that runs *code* in this interpreter (a worker started the way a user would)."""
    return [sys.executable, "-c", code]


async def concurrently(enqueue: Callable[[], Awaitable[object]], count: int) -> None:
    """Call *enqueue* *count* times, `PRELOAD_WIDTH` at a time."""
    for offset in range(0, count, PRELOAD_WIDTH):
        await asyncio.gather(*(enqueue() for _ in range(min(PRELOAD_WIDTH, count - offset))))
