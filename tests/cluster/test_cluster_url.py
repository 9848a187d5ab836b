"""The cluster URL and the cluster key layout, without a cluster: what is read, what is refused."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from arq_mediator import Mediator
from arq_mediator._cluster import parse_cluster_url
from arq_mediator._keys import Channels
from arq_mediator._layout import CLUSTER, SINGLE, tag_of
from arq_mediator._lease_scripts import CLAIM
from arq_mediator._scripts import render
from arq_mediator._sharded import ShardedPubSub

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster


def test_a_cluster_url_lists_seed_nodes_and_credentials() -> None:
    """Any number of seeds, default port 6379, credentials, TLS options under rediss+cluster://."""
    url = parse_cluster_url("redis+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert url.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (url.username, url.password, url.ssl) == ("user", "p@ss", False)
    secure = parse_cluster_url("rediss+cluster://h:7000/0?ssl_cert_reqs=none&ssl_check_hostname=false")
    assert secure.ssl
    assert secure.tls == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h:7000/3", r"only database 0"),
        ("redis+cluster://h:port", r"port 'port' of h is not a port number"),
        ("redis+cluster://h:1,,h:2", r"lists host:port pairs separated by commas"),
        ("redis+cluster://h?timeout=3", r"unknown option\(s\) timeout"),
        ("redis+cluster://h?ssl_ca_certs=/ca.pem", r"TLS options \(ssl_ca_certs\) need rediss\+cluster"),
    ],
)
def test_a_malformed_cluster_url_is_refused_when_the_mediator_is_built(url: str, message: str) -> None:
    """Each mistake is named by the constructor, before any connection."""
    with pytest.raises(ValueError, match=message):
        Mediator(redis=url)


def test_a_durable_enqueue_is_refused_on_a_cluster() -> None:
    """WAIT counts one node's replicas per connection: no promise across nodes, so none is made."""
    with pytest.raises(ValueError, match="not supported on Redis Cluster"):
        Mediator(redis="redis+cluster://h:7000", durable_enqueue=True)


def test_ids_keys_and_channels_carry_the_queue_tag_on_a_cluster_only() -> None:
    """One server keeps arq's names; a cluster puts every name of a queue's job in the queue's slot."""
    assert SINGLE.job_id("emails", "order-7") == "order-7"
    assert CLUSTER.job_id("emails", "order-7") == "{emails}order-7"
    assert CLUSTER.job_id("emails", "{emails}order-7") == "{emails}order-7"
    assert tag_of("{emails}order-7") == "emails"
    assert tag_of("order-7") is None
    assert CLUSTER.job_key("arq:job:", "{emails}x") == "arq:job:{emails}:{emails}x"
    channels = Channels(db=0, layout=CLUSTER)
    assert channels.wake("emails") == "arqm:0:wake:{emails}:emails"
    assert channels.job_of(channels.done("{emails}x")) == "{emails}x"
    assert Channels(db=2).wake("emails") == "arqm:2:wake:emails"
    with pytest.raises(ValueError, match="no braces"):
        CLUSTER.check_queue("a{b}")


def test_cluster_scripts_take_the_tag_as_their_key_and_publish_sharded() -> None:
    """The cluster rendering of a script reads its tag from KEYS and uses SPUBLISH; one server's does not."""
    single = render(CLAIM, Channels(db=0), None)
    cluster = render(CLAIM, Channels(db=0, layout=CLUSTER), None)
    assert "KEYS" not in single
    assert cluster.startswith("local T = KEYS[1]\n")
    assert "'arq:queue:' .. T .. ':' .. queue" in cluster
    assert "'PUBLISH'" not in cluster


class FrozenCluster:
    """What a subscriber reads of its cluster client: one seed node, which accepts but never answers."""

    def __init__(self, port: int) -> None:
        self.nodes_manager = SimpleNamespace(startup_nodes={})
        self._port = port

    def get_connection_kwargs(self) -> dict[str, Any]:
        return {"socket_timeout": 0.2}

    async def initialize(self) -> None:
        return None

    def get_nodes(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(host="127.0.0.1", port=self._port)]


async def test_a_frozen_node_fails_a_subscribe_within_the_client_timeout() -> None:
    """Reading the slot map from a node that hangs fails the subscribe after socket_timeout, not never."""
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    pubsub = ShardedPubSub(cast("RedisCluster", FrozenCluster(server.sockets[0].getsockname()[1])))
    async with asyncio.timeout(10):
        with pytest.raises(RedisConnectionError, match=r"did not take SSUBSCRIBE within 0.2s"):
            await pubsub.subscribe("{emails}wake")
    for writer in accepted:
        writer.close()
    server.close()
    await pubsub.aclose()
