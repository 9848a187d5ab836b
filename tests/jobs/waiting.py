"""Waiting without guessing: poll a condition until it holds or a deadline passes, never sleep-then-assert."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Worker settings that keep the tests fast: quick heartbeats and idle checks, short leases and grace.
FAST: dict[str, Any] = {"heartbeat": 0.2, "lease": 2.0, "idle_check": 0.2, "grace": 2.0}


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,
    *,
    interval: float = 0.01,
    what: str = "",
) -> None:
    """Return once *predicate* (sync or async) is true; fail the test if it is still false after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {what or predicate!r}")
        await asyncio.sleep(interval)


async def polled(
    fetch: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    timeout: float = 5.0,
    *,
    interval: float = 0.01,
    what: str = "",
) -> T:
    """Fetch until *check* accepts the value and return it; fail with the last value after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if check(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {what or check!r}; last value: {value!r}")
        await asyncio.sleep(interval)
