"""Reading a Redis Cluster URL and opening a cluster client.

``redis+cluster://[user:password@]host:port,host:port[?option=value&...]`` names seed nodes of one cluster
(any one that answers will do: the client asks it for the others and for which node serves which slot);
``rediss+cluster://`` speaks TLS to every node. A cluster has one database, so the path is empty (or
``/0``). Choosing such a URL opts into the cluster key layout (`_layout.Layout`). Nothing here connects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from redis._parsers import AsyncCommandsParser
from redis.asyncio.cluster import ClusterNode, RedisCluster

from ._sentinel import TLS_OPTIONS, address_of, credentials_of, read_options, tls_values

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """What a ``redis+cluster://`` URL says: seed nodes, credentials, TLS."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    tls: dict[str, Any] = field(default_factory=dict)


def is_cluster_url(url: str) -> bool:
    """Return whether *url* is a ``redis+cluster://`` (or ``rediss+cluster://``) URL."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    """Read a ``redis+cluster://host:port,host:port`` URL.

    Raises:
        ValueError: the URL is malformed; the message says which part and what was expected.
    """
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise ValueError(f"cannot read cluster URL {url!r}: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"a cluster URL starts with redis+cluster:// or rediss+cluster://, got {url!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, password = credentials_of(userinfo)
    nodes = tuple(address_of(address, url, DEFAULT_PORT) for address in hosts.split(","))
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0: leave the path out of {url!r}")
    tls = read_options(parts.query, url, TLS_OPTIONS)
    if tls and scheme != "rediss+cluster":
        raise ValueError(f"TLS options ({', '.join(sorted(tls))}) need rediss+cluster://, in {url!r}")
    return ClusterUrl(
        nodes=nodes,
        username=username,
        password=password,
        ssl=scheme == "rediss+cluster",
        tls=tls_values(tls, url),
    )


class CommandTable(AsyncCommandsParser):
    """redis-py's table of where each command's keys are, read from the cluster once.

    redis-py reads it again (``COMMAND``, on the master of slot 0) every time it reads the slot map, which
    it does after any connection error or timeout: with that one master hung, reading the map failed too
    and every call to the healthy masters with it, until that master answered again. The table does not
    change while the client runs.
    """

    async def initialize(self, node: ClusterNode | None = None) -> None:
        """Read the table, unless it was read already."""
        if not self.commands:
            await super().initialize(node)
        elif node is not None:
            self.node = node


class SeededCluster(RedisCluster):
    """redis-py's cluster client that never forgets the URL's seed nodes.

    On a connection error redis-py drops the node from the nodes it asks for the slot map, and closes
    every connection, which fails the calls other tasks had in flight on the same client and drops their
    nodes too: under load a master's crash could leave it none to ask, for good. Each time it reads the
    map again, the seeds the URL named are added back.
    """

    seeds: tuple[tuple[str, int], ...] = ()

    async def initialize(self) -> RedisCluster:
        """Read the slot map (when due), asking the URL's seeds besides the nodes last known."""
        if self._initialize:
            known = self.nodes_manager.startup_nodes
            for host, port in self.seeds:
                if f"{host}:{port}" not in known:
                    known[f"{host}:{port}"] = ClusterNode(host, port, **self.connection_kwargs)
        return await super().initialize()


def open_cluster(url: str, limits: dict[str, Any]) -> RedisCluster:
    """Return a client of the cluster *url* names; it learns the slot map on first use.

    A MOVED reply (a failover, a resharding) moves the slot it names to the node it names, and the call
    goes there; a connection error makes the client read the slot map again on its next call. Either
    way callers see a failover as a few failed or slower calls, never as a dead client.
    """
    parsed = parse_cluster_url(url)
    tls: dict[str, Any] = {"ssl": True, **parsed.tls} if parsed.ssl else {}
    cluster: SeededCluster = SeededCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
        username=parsed.username,
        password=parsed.password,
        # Not a full re-read of the slot map on MOVED: that closes every connection of the client, and a
        # node not yet told of a failover would send it back to the old master. A MOVED reply is the
        # new owner's word for its slot.
        reinitialize_steps=0,
        **limits,
        **tls,
    )
    cluster.seeds = parsed.nodes
    cluster.commands_parser = CommandTable()
    return cluster
