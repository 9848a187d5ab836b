"""Opening the Redis client the job queues use, with connect and command timeouts on every connection.

Without a command timeout a Redis that hangs (paused, or behind a network partition) hangs every caller;
with one, it fails as fast as a refused connection does, and callers see the same "unavailable" error.

Through Sentinel, every new connection asks the sentinels where the master is, so after a failover a
connection that broke (or that met a READONLY reply from a demoted master) reconnects to the new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from arq.connections import RedisSettings
from redis.asyncio import Connection, ConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._cluster import is_cluster_url, open_cluster, parse_cluster_url
from ._sentinel import SentinelUrl, is_sentinel_url, parse_sentinel_url

# The URL schemes `open_client` takes (redis-py's own, and Sentinel's).
_PLAIN_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long the job client waits on Redis.

    Attributes:
        connect: Seconds to open a connection.
        command: Seconds to wait for the reply to one command; every script of the engine answers in
            well under a millisecond, so this only ever ends a wait on a Redis that does not answer.
    """

    connect: float = 2.0
    command: float = 5.0

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.command <= 0:
            raise ValueError(f"Redis timeouts must be positive, got {self.connect=} and {self.command=}")


class _TimedConnection(Connection):
    """redis-py's connection, its write deadline kept by `asyncio.timeout` rather than `asyncio.wait_for`.

    On Python 3.11 ``wait_for`` starts a task for every command it bounds, which costs a fifth of an
    enqueue's client time; a timeout context costs a timer. Reads are bounded by redis-py as they were.
    """

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        """Send *command* within the socket timeout; on timeout drop the connection, as redis-py does."""
        limit, self.socket_timeout = self.socket_timeout, None
        try:
            async with asyncio.timeout(limit):
                await super().send_packed_command(command, check_health)
        except TimeoutError:
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = limit


class _TimedSentinelConnection(SentinelManagedConnection, _TimedConnection):
    """A sentinel-managed connection (it finds the master on connect) with the cheaper write deadline."""


class SentinelMaster(Redis):
    """A client of the master a set of sentinels names; closing it closes its sentinel connections too."""

    sentinel_manager: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the master's connections, then those to the sentinels."""
        try:
            await super().aclose(close_connection_pool)
        finally:
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


def check_target(target: str | RedisSettings | None) -> None:
    """Check that *target* names a Redis this library can open, without connecting.

    Raises:
        ValueError: a URL of another scheme, or a malformed Sentinel URL; the message says what is wrong.
    """
    if not isinstance(target, str):
        return
    scheme = target.partition("://")[0].lower()
    if is_sentinel_url(target):
        parse_sentinel_url(target)
    elif is_cluster_url(target):
        parse_cluster_url(target)
    elif "://" not in target or scheme not in _PLAIN_SCHEMES:
        raise ValueError(
            "a Redis URL starts with redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://, "
            f"redis+cluster:// or rediss+cluster://; got {target!r}"
        )


def follows_master(connection: Connection | None, redis: Redis) -> bool:
    """Return whether *connection* (a pub/sub's, say) is on the master *redis*'s sentinels last named.

    Always true without Sentinel. A subscriber's connection is never handed back to the pool, so when the
    pool learns of a new master (another command reconnected after a failover) it must move by itself.
    """
    pool = getattr(redis, "connection_pool", None)  # a cluster client has none
    if connection is None or not isinstance(pool, SentinelConnectionPool) or pool.master_address is None:
        return True
    return (connection.host, connection.port) == tuple(pool.master_address)


def _open_sentinel_master(
    url: SentinelUrl, limits: dict[str, Any], credentials: dict[str, Any], *, tls_to_sentinels: bool = True
) -> SentinelMaster:
    """Return a client of *url*'s master, found through its sentinels on every new connection.

    arq's `RedisSettings` speaks TLS to the master only, so it passes *tls_to_sentinels* false.
    """
    tls: dict[str, Any] = {"ssl": True, **url.tls} if url.ssl else {}
    to_sentinels = {
        **limits,
        **(tls if tls_to_sentinels else {}),
        "username": url.sentinel_username,
        "password": url.sentinel_password,
    }
    sentinel = Sentinel(list(url.sentinels), sentinel_kwargs=to_sentinels, **limits, **tls)  # type: ignore[no-untyped-call]
    if not url.ssl:  # TLS keeps redis-py's own connection class
        credentials = {**credentials, "connection_class": _TimedSentinelConnection}
    master: SentinelMaster = sentinel.master_for(url.master, redis_class=SentinelMaster, **credentials)
    master.sentinel_manager = sentinel
    return master


def open_client(target: str | RedisSettings, timeouts: Timeouts) -> Redis:
    """Return a client of *target* (a ``redis://``, Sentinel or cluster URL, or arq `RedisSettings`).

    It connects on first use: nothing is sent yet, so a mediator opens while Redis is down and its calls
    fail (or succeed) later. A cluster URL gives a `RedisCluster`, typed as `Redis`: it answers the
    commands the engine sends, and `_layout.layout_of` tells the two apart where they differ.
    """
    limits: dict[str, Any] = {"socket_connect_timeout": timeouts.connect, "socket_timeout": timeouts.command}
    if isinstance(target, str) and is_cluster_url(target):
        return cast("Redis", open_cluster(target, limits))
    if isinstance(target, str) and is_sentinel_url(target):
        url = parse_sentinel_url(target)
        return _open_sentinel_master(
            url, limits, {"db": url.db, "username": url.username, "password": url.password}
        )
    if isinstance(target, str):
        if target.startswith("redis://"):  # plain TCP; TLS and Unix sockets keep their own classes
            limits["connection_class"] = _TimedConnection
        client: Redis = Redis.from_url(target, **limits)
        return client
    credentials: dict[str, Any] = {
        "db": target.database,
        "username": target.username,
        "password": target.password,
    }
    if target.sentinel:
        sentinels = target.host if isinstance(target.host, list) else [(target.host, target.port)]
        url = SentinelUrl(sentinels=tuple(sentinels), master=target.sentinel_master, ssl=target.ssl)
        return _open_sentinel_master(url, limits, credentials, tls_to_sentinels=False)
    if not target.ssl and not target.unix_socket_path:
        pool = ConnectionPool(
            connection_class=_TimedConnection,
            host=str(target.host),
            port=target.port,
            max_connections=target.max_connections,
            **credentials,
            **limits,
        )
        return Redis.from_pool(pool)
    return Redis(
        host=str(target.host),
        port=target.port,
        unix_socket_path=target.unix_socket_path,
        ssl=target.ssl,
        ssl_keyfile=target.ssl_keyfile,
        ssl_certfile=target.ssl_certfile,
        ssl_cert_reqs=target.ssl_cert_reqs,
        ssl_ca_certs=target.ssl_ca_certs,
        ssl_ca_data=target.ssl_ca_data,
        ssl_check_hostname=target.ssl_check_hostname,
        max_connections=target.max_connections,
        **credentials,
        **limits,
    )
