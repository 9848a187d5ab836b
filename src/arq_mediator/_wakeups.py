"""The worker's subscriptions: the wake-ups of its queues, the claims pushed to it, the abort requests.

A wake-up (published by a script that made a job due) only sets the claim loop's attention; the claim
that follows reads Redis for what is due, so a lost or repeated wake-up costs a little latency, never a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError

from ._connection import follows_master
from ._resilience import LoopHealth

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

    from ._keys import Channels

logger = logging.getLogger("arq_mediator.worker")
# Seconds the listener waits for a message before looking again: short enough that a connection Redis
# dropped is noticed, long enough to cost nothing.
LISTEN_POLL = 1.0


async def listen(
    pubsub: PubSub,
    channels: Channels,
    redis: Redis,
    name: str,
    queues: Sequence[str],
    wake: Callable[[], None],
    abort: Callable[[str], None],
    pushes: tuple[str | None, Callable[[bytes], None]] = (None, lambda data: None),
) -> None:
    """Hear wake-ups and abort requests; nothing on these server-wide channels can stop the listener.

    Listens on *channels* through *pubsub* (*redis*: the client it came from). Calls *wake* for a
    wake-up of one of *queues* (and after each (re)subscription, as wake-ups may have
    been missed meanwhile), *abort* with the id of a job asked to abort, and *pushes*' callback with
    each message on its channel (the claims pushed to this worker, `_pushes`; no channel: none). Through
    Sentinel it subscribes again on the new master once another loop has found it.
    """
    health = LoopHealth(logger, f"worker {name} listening for wake-ups")
    aborts = {channels.abort_of(q) for q in queues} if channels.layout.cluster else {channels.abort}
    push_channel, pushed = pushes
    channels_heard = [channels.wake(q) for q in queues] + sorted(aborts)
    if push_channel is not None:
        channels_heard.append(push_channel)
    subscribed = False
    while True:
        try:
            if not subscribed:
                await pubsub.subscribe(*channels_heard)
                subscribed = True
                wake()  # wake-ups may have been missed meanwhile
            elif not follows_master(pubsub.connection, redis):
                raise RedisConnectionError("the Redis master moved (a Sentinel failover)")
            message = await pubsub.get_message(timeout=LISTEN_POLL)
            health.succeeded()
        except Exception as error:
            subscribed = False
            await asyncio.sleep(health.failed(error))
            with contextlib.suppress(Exception):
                await pubsub.reset()
            continue
        if message is not None and message.get("type") == "message":
            if push_channel is not None and message.get("channel") == push_channel.encode():
                data = message.get("data")
                if isinstance(data, bytes):
                    pushed(data)
                continue
            _heard(message, aborts, channels.wake_prefix, name, wake, abort)


def _heard(
    message: dict[str, Any],
    abort_channels: set[str],
    wake_prefix: str,
    name: str,
    wake: Callable[[], None],
    abort: Callable[[str], None],
) -> None:
    channel = message.get("channel")
    data = message.get("data")
    if not isinstance(channel, bytes) or not isinstance(data, bytes):
        return
    channel_name = channel.decode(errors="replace")
    if channel_name in abort_channels:
        try:
            abort(data.decode())
        except UnicodeDecodeError:
            logger.debug("worker %s ignored an abort request that names no text id", name)
    elif channel_name.startswith(wake_prefix):
        wake()
