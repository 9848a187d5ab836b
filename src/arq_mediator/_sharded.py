"""Sharded pub/sub on Redis Cluster: SSUBSCRIBE on the node serving each channel's slot.

redis-py's asyncio cluster client has no pub/sub. `ShardedPubSub` offers the part of redis-py's `PubSub`
the engine uses (`subscribe`, `unsubscribe`, `get_message`, `connect`, `reset`, `aclose`, `subscribed`)
over one connection per node, its messages shaped as `PubSub`'s (``message`` and ``subscribe``), so the
result waiter, the worker's listener and the dashboard's event stream read either one alike.

When the slot map changes (a failover, a resharding) a node ends the subscriptions of slots it no longer
serves (an unasked ``sunsubscribe``), answers MOVED, or drops the connection: each surfaces from
`get_message` as a `ConnectionError`, and the caller's usual recovery, `connect` (which reads the slot map
again and subscribes every channel on the node now serving it), follows the move.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import Connection, SSLConnection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster

# The connection settings of the cluster client that a subscriber's own connections take.
_SETTINGS = (
    "username",
    "password",
    "socket_connect_timeout",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_cert_reqs",
    "ssl_certfile",
    "ssl_check_hostname",
    "ssl_keyfile",
)
_KINDS = {b"smessage": "message", b"ssubscribe": "subscribe", b"sunsubscribe": "unsubscribe"}


class ShardedPubSub:
    """Subscriptions to sharded channels of one cluster, each on the node serving its slot."""

    def __init__(self, cluster: RedisCluster, *, ignore_subscribe_messages: bool = False) -> None:
        self._cluster = cluster
        self._ignore_subscribe_messages = ignore_subscribe_messages
        self._channels: set[str] = set()
        self._links: dict[tuple[str, int], tuple[Connection, asyncio.Task[None]]] = {}
        # Which master serves which slots: (first, last, (host, port)), read when first needed and again
        # on `connect`.
        self._slots: list[tuple[int, int, tuple[str, int]]] = []
        self._inbox: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()
        self._sending = asyncio.Lock()
        # Set while `connect` has not subscribed everything again: `get_message` says so until it has.
        self._broken = False
        # As redis-py's PubSub: set once connected (here, one of the node connections), None before.
        self.connection: Connection | None = None

    @property
    def subscribed(self) -> bool:
        """Return whether any channel is subscribed."""
        return bool(self._channels)

    async def subscribe(self, *channels: str) -> None:
        """Subscribe *channels*, each on the node that serves its slot now."""
        self._channels.update(channels)
        await self._send("SSUBSCRIBE", channels)

    async def unsubscribe(self, *channels: str) -> None:
        """Stop hearing *channels*."""
        self._channels.difference_update(channels)
        await self._send("SUNSUBSCRIBE", channels)

    async def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        """Return the next message, or ``None`` after *timeout* seconds.

        Raises:
            ConnectionError: a node's connection was lost, or the slot map changed under a channel;
                `connect` subscribes everything again where it belongs now.
        """
        if self._broken and self._channels:
            raise RedisConnectionError("sharded subscriptions are not all restored yet")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                item = await self._inbox.get()
                if isinstance(item, Exception):
                    raise item
                return item
        return None

    async def connect(self) -> None:
        """Read the slot map again and subscribe every channel on the node that serves it now."""
        await self._close_links()
        self._broken = True
        await self._send("SSUBSCRIBE", tuple(self._channels))
        self._broken = False

    async def reset(self) -> None:
        """Drop every subscription and connection."""
        self._channels.clear()
        self._broken = False
        await self._close_links()

    async def aclose(self) -> None:
        """Close every connection."""
        await self.reset()

    async def _send(self, command: str, channels: tuple[str, ...] | set[str]) -> None:
        async with self._sending:  # one connection per node, even for subscribers racing to open it
            if not channels:
                return
            # Reads wait for as long as no message comes; a write (and reading the slot map, whose
            # connections have no socket timeout either) waits no longer than the client's commands do,
            # so a node that hangs fails the call instead of holding every subscriber behind this lock.
            limit = self._cluster.get_connection_kwargs().get("socket_timeout")
            try:
                async with asyncio.timeout(limit):
                    if not self._slots:
                        self._slots = await self._read_slots()
                    by_node: dict[tuple[str, int], list[str]] = {}
                    for channel in channels:
                        by_node.setdefault(self._node_of(channel), []).append(channel)
                    for address, names in by_node.items():
                        connection = await self._link(address)
                        await connection.send_command(command, *names)
            except TimeoutError:
                self._slots = []
                raise RedisConnectionError(f"a cluster node did not take {command} within {limit}s") from None
            except (RedisError, OSError):
                self._slots = []  # a node named by the map is gone: ask for the map again next time
                raise

    def _node_of(self, channel: str) -> tuple[str, int]:
        slot = key_slot(channel.encode())
        for first, last, address in self._slots:
            if first <= slot <= last:
                return address
        raise RedisConnectionError(f"no cluster node serves slot {slot} (channel {channel})")

    async def _read_slots(self) -> list[tuple[int, int, tuple[str, int]]]:
        """Ask the first node that answers which master serves which slots.

        The subscriber keeps this map of its own: making the cluster client read its map again would
        close the connections other callers are using.
        """
        await self._cluster.initialize()
        seeds = {(node.host, int(node.port)) for node in self._cluster.get_nodes()}
        seeds |= {(node.host, int(node.port)) for node in self._cluster.nodes_manager.startup_nodes.values()}
        failure: Exception | None = None
        for host, port in sorted(seeds):
            connection = self._connection(host, port)
            try:
                await connection.connect()  # type: ignore[no-untyped-call]
                await connection.send_command("CLUSTER", "SLOTS")
                reply = await connection.read_response()
                return [
                    (int(first), int(last), (master[0].decode() or host, int(master[1])))
                    for first, last, master, *_ in reply
                ]
            except (RedisError, OSError, ValueError, TypeError, IndexError) as error:
                failure = error
            finally:
                await connection.disconnect()
        raise RedisConnectionError(f"no cluster node told its slot map: {failure}")

    def _connection(self, host: str, port: int) -> Connection:
        settings = self._cluster.get_connection_kwargs()
        options: dict[str, Any] = {key: settings[key] for key in _SETTINGS if settings.get(key) is not None}
        kind = SSLConnection if settings.get("connection_class") is SSLConnection else Connection
        return kind(host=host, port=port, **options)

    async def _link(self, address: tuple[str, int]) -> Connection:
        link = self._links.get(address)
        if link is not None and not link[1].done():
            return link[0]
        connection = self._connection(*address)
        await connection.connect()  # type: ignore[no-untyped-call]
        reader = asyncio.create_task(self._read(connection), name=f"sharded pub/sub reader {address}")
        self._links[address] = (connection, reader)
        self.connection = self.connection or connection
        return connection

    async def _read(self, connection: Connection) -> None:
        """Forward one node's messages to the inbox; any trouble goes there as a `ConnectionError`."""
        try:
            while True:
                reply = await connection.read_response(timeout=None, disconnect_on_error=True)
                if not isinstance(reply, list) or len(reply) != 3:
                    continue
                kind = _KINDS.get(reply[0])
                channel = reply[1].decode(errors="replace") if isinstance(reply[1], bytes) else ""
                if kind == "unsubscribe" and channel in self._channels:  # its slot moved away
                    raise RedisConnectionError(f"sharded channel {channel} moved to another node")
                if kind == "message" or (kind == "subscribe" and not self._ignore_subscribe_messages):
                    self._inbox.put_nowait({"type": kind, "channel": reply[1], "data": reply[2]})
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as error:
            failure = error if isinstance(error, RedisConnectionError) else RedisConnectionError(str(error))
            self._inbox.put_nowait(failure)

    async def _close_links(self) -> None:
        links, self._links = list(self._links.values()), {}
        self.connection = None
        self._slots = []  # whatever ended these links may have moved slots: the next subscribe asks again
        for connection, reader in links:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await reader
            with contextlib.suppress(RedisError, OSError):
                await connection.disconnect()
        # Failures of the links just closed are told already: any next one is of the new links.
        for item in [item for item in _drain(self._inbox) if not isinstance(item, Exception)]:
            self._inbox.put_nowait(item)


def _drain(inbox: asyncio.Queue[dict[str, Any] | Exception]) -> list[dict[str, Any] | Exception]:
    items = []
    while not inbox.empty():
        items.append(inbox.get_nowait())
    return items
