"""Live events for the dashboard: the job state changes the engine publishes, read as `DashboardEvent`s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .._resilience import LoopHealth
from ._model import DashboardEvent, JobState
from ._records import text

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("arq_mediator.dashboard")
# Seconds to wait for a message before looking again: a connection Redis dropped is noticed then.
LISTEN_POLL = 1.0
# The states a message can name.
_STATES = {state.value: state for state in JobState}


async def job_events(redis: Redis, channel: str) -> AsyncIterator[DashboardEvent]:
    """Yield a `DashboardEvent` for each state change published on *channel*, surviving any Redis error."""
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    health = LoopHealth(logger, "dashboard events")
    subscribed = False
    try:
        while True:
            try:
                if not subscribed:
                    await pubsub.subscribe(channel)
                    subscribed = True
                message = await pubsub.get_message(timeout=LISTEN_POLL)
                health.succeeded()
            except Exception as error:  # any Redis trouble: back off, subscribe again
                subscribed = False
                await asyncio.sleep(health.failed(error))
                with contextlib.suppress(Exception):
                    await pubsub.reset()
                continue
            event = event_of(message)
            if event is not None:
                yield event
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def event_of(message: dict[str, Any] | None) -> DashboardEvent | None:
    """Read a message of the events channel (``<state>\\t<queue>\\t<id>``); ``None`` when it is none."""
    if message is None or message.get("type") != "message":
        return None
    fields = text(message.get("data")).split("\t", 2)
    if len(fields) != 3 or fields[0] not in _STATES:
        return None
    return DashboardEvent(kind="job", job_id=fields[2], state=_STATES[fields[0]], queue=fields[1] or None)
