"""Opening the Redis client the job queues use, with connect and command timeouts on every connection.

Without a command timeout a Redis that hangs (paused, or behind a network partition) hangs every caller;
with one, it fails as fast as a refused connection does, and callers see the same "unavailable" error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from arq.connections import RedisSettings
from redis.asyncio import Connection, ConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import TimeoutError as RedisTimeoutError


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


def open_client(target: str | RedisSettings, timeouts: Timeouts) -> Redis:
    """Return a client of *target* (a ``redis://`` URL or arq `RedisSettings`); it connects on first use.

    Nothing is sent yet, so a mediator opens while Redis is down and its calls fail (or succeed) later.
    """
    limits: dict[str, Any] = {"socket_connect_timeout": timeouts.connect, "socket_timeout": timeouts.command}
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
        sentinel = Sentinel(sentinels, ssl=target.ssl, sentinel_kwargs=limits, **limits)  # type: ignore[no-untyped-call]
        master: Redis = sentinel.master_for(target.sentinel_master, **credentials)
        return master
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
