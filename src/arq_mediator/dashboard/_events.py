"""Live events for the dashboard: the job state changes the engine publishes, read as `DashboardEvent`s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._resilience import LoopHealth
from .._results import open_pubsub
from ._model import DashboardEvent, JobState
from ._records import text

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .._keys import Channels

logger = logging.getLogger("arq_mediator.dashboard")
# Seconds to wait for a message before looking again: a connection Redis dropped is noticed then.
LISTEN_POLL = 1.0
# The states a message can name.
_STATES = {state.value: state for state in JobState}


async def job_events(
    redis: Redis, channels: Channels, queues: Callable[[], Awaitable[set[str]]]
) -> AsyncIterator[DashboardEvent]:
    """Yield a `DashboardEvent` for each state change published on the events channel, surviving any
    Redis error. On a cluster each of the *queues* has its own events channel: all are heard."""
    pubsub = open_pubsub(redis, channels, ignore_subscribe_messages=True)
    health = LoopHealth(logger, "dashboard events")
    subscribed = False
    try:
        while True:
            try:
                if not subscribed:
                    if channels.layout.cluster:
                        await pubsub.subscribe(*(channels.events_of(queue) for queue in await queues()))
                    else:
                        await pubsub.subscribe(channels.events)
                    subscribed = True
                message = await pubsub.get_message(timeout=LISTEN_POLL)
                health.succeeded()
            except Exception as error:  # any Redis trouble: back off, subscribe again
                subscribed = False
                await asyncio.sleep(health.failed(error))
                with contextlib.suppress(Exception):
                    await pubsub.reset()
                continue
            for event in events_of(message):
                yield event
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def events_of(message: dict[str, Any] | None) -> list[DashboardEvent]:
    """Read a message of the events channel: a line ``<state>\\t<queue>\\t<id>`` per change.

    What is not such a line (another client's message on the channel) is left out.
    """
    if message is None or message.get("type") != "message":
        return []
    events = []
    for line in text(message.get("data")).split("\n"):
        fields = line.split("\t", 2)
        if len(fields) == 3 and fields[0] in _STATES:
            state = _STATES[fields[0]]
            events.append(DashboardEvent(kind="job", job_id=fields[2], state=state, queue=fields[1] or None))
    return events
