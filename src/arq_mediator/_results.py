"""Waiting for job results without polling: one pub/sub connection, one channel per awaited job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._connection import follows_master
from ._errors import QueueNotConnectedError
from ._keys import RESULT_PREFIX, Channels
from ._sharded import ShardedPubSub

if TYPE_CHECKING:
    from redis.asyncio import Connection, Redis
    from redis.asyncio.client import PubSub
    from redis.asyncio.cluster import RedisCluster

logger = logging.getLogger("arq_mediator.results")


class ResultWaiter:
    """Resolve futures with result records as workers publish them.

    A waiter subscribes to the job's completion channel *before* it reads the stored result, so a job
    finishing in between is seen one way or the other. After a lost connection, every awaited job's
    stored result is read again, since messages published while disconnected are gone. Through Sentinel,
    the subscription moves to the new master once a failover is seen.
    """

    def __init__(self, redis: Redis, channels: Channels) -> None:
        self._redis = redis
        self._channels = channels
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, set[asyncio.Future[bytes]]] = {}
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._connecting = asyncio.Lock()

    async def subscribe(self, job_id: str) -> asyncio.Future[bytes]:
        """Return a future that receives *job_id*'s result record; return once the subscription is live."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._waiting.setdefault(job_id, set()).add(future)
        try:
            confirmed = self._confirmed.get(job_id)
            if confirmed is None:
                confirmed = self._confirmed[job_id] = loop.create_future()
                pubsub = self._ensure_pubsub()
                if pubsub.connection is None:
                    # redis-py's PubSub.connect() is not safe to race: concurrent first subscribers would
                    # each take a connection and all but the last would be lost with their subscriptions.
                    async with self._connecting:
                        if pubsub.connection is None:
                            await pubsub.connect()  # type: ignore[no-untyped-call]
                await pubsub.subscribe(self._channels.done(job_id))
                if self._reader is None or self._reader.done():
                    self._reader = asyncio.create_task(self._read(), name="arq-mediator result reader")
            # Redis must have the subscription before the caller reads the stored result: a job finishing
            # in between would otherwise be neither stored yet nor heard.
            await asyncio.shield(confirmed)
        except BaseException:
            self.forget(job_id, future)
            raise
        return future

    def forget(self, job_id: str, future: asyncio.Future[bytes]) -> None:
        """Stop waiting with *future*; unsubscribe once nobody waits for *job_id*."""
        waiters = self._waiting.get(job_id)
        if waiters is None:
            return
        waiters.discard(future)
        if not waiters:
            del self._waiting[job_id]
            confirmed = self._confirmed.pop(job_id, None)
            if confirmed is not None and not confirmed.done():
                confirmed.cancel()
            if self._pubsub is not None:
                # Fire and forget: the reply arrives on the reader's connection and is skipped there.
                task = asyncio.ensure_future(self._unsubscribe(job_id))
                task.add_done_callback(_log_failure)

    async def _unsubscribe(self, job_id: str) -> None:
        if self._pubsub is not None and job_id not in self._waiting:
            await self._pubsub.unsubscribe(self._channels.done(job_id))

    def _ensure_pubsub(self) -> PubSub:
        if self._pubsub is None:
            self._pubsub = open_pubsub(self._redis, self._channels)
        return self._pubsub

    def _resolve(self, job_id: str, record: bytes) -> None:
        for future in self._waiting.get(job_id, ()):
            if not future.done():
                future.set_result(record)

    async def _read(self) -> None:
        pubsub = self._ensure_pubsub()
        delay = 0.1
        while self._waiting or pubsub.subscribed:
            try:
                if not follows_master(pubsub.connection, self._redis):
                    raise RedisConnectionError("the Redis master moved (a Sentinel failover)")
                # A bounded wait, not a blocking read: the client's command timeout would end that one.
                message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                logger.warning("result channel lost (%s); reconnecting in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                    # redis-py types a pub/sub's connection as always None
                    connection = cast("Connection | None", pubsub.connection)
                    if connection is not None:  # still open to a demoted master: close it first
                        await connection.disconnect()
                    await pubsub.connect()  # type: ignore[no-untyped-call]
                    await self._recheck()
                    delay = 0.1
                continue
            if message is None or message["channel"] is None:
                continue
            job_id = self._channels.job_of(message["channel"].decode())
            if message["type"] == "message":
                self._resolve(job_id, message["data"])
            elif message["type"] == "subscribe":
                confirmed = self._confirmed.get(job_id)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)

    async def _recheck(self) -> None:
        job_ids = list(self._waiting)
        if not job_ids:
            return
        keys = [self._channels.layout.job_key(RESULT_PREFIX, job_id) for job_id in job_ids]
        if self._channels.layout.cluster:  # keys of many slots: one GET each, all at once
            records = await asyncio.gather(*(self._redis.get(key) for key in keys))
        else:
            records = await self._redis.mget(keys)
        for job_id, record in zip(job_ids, records, strict=True):
            if record is not None:
                self._resolve(job_id, record)

    async def close(self) -> None:
        """Stop reading and close the pub/sub connection; pending waits raise `QueueNotConnectedError`."""
        for waiters in self._waiting.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(
                        QueueNotConnectedError("the mediator was closed while waiting for a result")
                    )
        for confirmed in self._confirmed.values():
            confirmed.cancel()
        self._waiting.clear()
        self._confirmed.clear()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("unsubscribe failed: %s", task.exception())


def open_pubsub(redis: Redis, channels: Channels, *, ignore_subscribe_messages: bool = False) -> PubSub:
    """Return a pub/sub of *redis*: redis-py's on one server, a `ShardedPubSub` on a cluster."""
    if channels.layout.cluster:
        cluster = cast("RedisCluster", redis)
        sharded = ShardedPubSub(cluster, ignore_subscribe_messages=ignore_subscribe_messages)
        return cast("PubSub", sharded)  # it answers the calls the engine makes of a PubSub
    return redis.pubsub(ignore_subscribe_messages=ignore_subscribe_messages)
