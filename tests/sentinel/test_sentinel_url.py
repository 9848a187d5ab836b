"""The Sentinel URL and the durable enqueue's settings: what they accept, and clear errors for the rest.

Nothing here connects: a URL is read when the mediator is built, and a mistake in it is reported then;
a client is built without connecting.
"""

from __future__ import annotations

import pytest
from arq.connections import RedisSettings
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelManagedSSLConnection

from arq_mediator import Durability, Mediator
from arq_mediator._cli import main
from arq_mediator._connection import SentinelMaster, Timeouts, open_client
from arq_mediator._policy import durability_of
from arq_mediator._sentinel import SentinelUrl, is_sentinel_url, parse_sentinel_url


def test_a_full_url_names_sentinels_master_database_and_credentials() -> None:
    """Hosts with ports, an IPv6 host, a host without port, credentials, master name and database."""
    url = parse_sentinel_url(
        "redis+sentinel://app:s%40cret@10.0.0.1:26380,[::1]:26381,sentinel-3/jobs%20main/4"
        "?sentinel_password=watch&sentinel_username=watcher"
    )
    assert url == SentinelUrl(
        sentinels=(("10.0.0.1", 26380), ("::1", 26381), ("sentinel-3", 26379)),
        master="jobs main",
        db=4,
        username="app",
        password="s@cret",
        sentinel_username="watcher",
        sentinel_password="watch",
    )


def test_a_short_url_defaults_to_database_0_without_credentials() -> None:
    """``/<master>`` alone means database 0; a password without user is the default user's."""
    assert parse_sentinel_url("redis+sentinel://:pw@127.0.0.1:26379/jobs") == SentinelUrl(
        sentinels=(("127.0.0.1", 26379),), master="jobs", password="pw"
    )


def test_a_user_without_password_and_an_ipv6_host_without_port_are_read() -> None:
    """``user@`` names a user with no password; ``[::1]`` alone takes the default sentinel port."""
    url = parse_sentinel_url("redis+sentinel://reader@[::1]/jobs")
    assert (url.username, url.password, url.sentinels) == ("reader", None, (("::1", 26379),))


def test_rediss_speaks_tls_with_the_options_given() -> None:
    """``rediss+sentinel://`` turns TLS on; its options reach redis-py as it names them."""
    url = parse_sentinel_url(
        "rediss+sentinel://h:26379/jobs/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem&ssl_check_hostname=false"
    )
    assert url.ssl
    assert url.tls == {"ssl_cert_reqs": "required", "ssl_ca_certs": "/ca.pem", "ssl_check_hostname": False}


async def test_tls_reaches_the_sentinels_from_a_url_and_only_the_master_from_arq_settings() -> None:
    """``rediss+sentinel://`` encrypts both hops; arq's ``RedisSettings(ssl=True)`` only the master's."""
    from_url = open_client("rediss+sentinel://h:26379/jobs/0?ssl_cert_reqs=none", Timeouts())
    settings = RedisSettings(host=[("h", 26379)], sentinel=True, sentinel_master="jobs", ssl=True)
    from_settings = open_client(settings, Timeouts())
    try:
        for client, sentinels_encrypted in ((from_url, True), (from_settings, False)):
            assert isinstance(client, SentinelMaster)
            assert client.connection_pool.connection_class is SentinelManagedSSLConnection
            sentinel_pool = client.sentinel_manager.sentinels[0].connection_pool
            assert (sentinel_pool.connection_class is SSLConnection) is sentinels_encrypted
    finally:
        await from_url.aclose()
        await from_settings.aclose()


def test_sentinel_urls_are_told_apart_from_others() -> None:
    """Only the two Sentinel schemes count, in any case."""
    assert is_sentinel_url("REDIS+SENTINEL://h/jobs")
    assert is_sentinel_url("rediss+sentinel://h/jobs")
    assert not is_sentinel_url("redis://h:6379/0")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h:26379", r"path is /<master name> or /<master name>/<db>"),
        ("redis+sentinel://h:26379/jobs/0/extra", r"path is /<master name> or /<master name>/<db>"),
        ("redis+sentinel://h:26379/jobs/zero", r"database in a Sentinel URL is a number"),
        ("redis+sentinel://h:port/jobs", r"port 'port' of h is not a port number"),
        ("redis+sentinel://h:70000/jobs", r"port '70000' of h is not a port number"),
        ("redis+sentinel://h:1,,h:2/jobs", r"lists host:port pairs separated by commas"),
        ("redis+sentinel://[::1/jobs", r"cannot read Sentinel URL .*Invalid IPv6 URL"),
        ("redis+sentinel://[::1]x/jobs", r"is not \[IPv6 address\]:port"),
        ("redis+sentinel://h/jobs?timeout=3", r"unknown option\(s\) timeout"),
        ("redis+sentinel://h/jobs?sentinel_password=a&sentinel_password=b", r"given twice"),
        ("redis+sentinel://h/jobs?ssl_ca_certs=/ca.pem", r"TLS options \(ssl_ca_certs\) need rediss"),
        ("rediss+sentinel://h/jobs?ssl_cert_reqs=maybe", r"ssl_cert_reqs is one of none, optional, required"),
        ("rediss+sentinel://h/jobs?ssl_check_hostname=yes", r"ssl_check_hostname is true or false"),
    ],
)
def test_a_malformed_url_is_refused_when_the_mediator_is_built(url: str, message: str) -> None:
    """Each malformed part gets its own message, raised by the constructor, not at the first call."""
    with pytest.raises(ValueError, match=message):
        Mediator(redis=url)


def test_a_url_of_another_scheme_is_refused_with_the_schemes_that_work() -> None:
    """A typo in the scheme is named at construction."""
    with pytest.raises(ValueError, match=r"starts with redis://, rediss://, unix://, redis\+sentinel://"):
        Mediator(redis="redis-sentinel://h/jobs")
    with pytest.raises(ValueError, match="starts with redis://"):
        Mediator(redis="127.0.0.1:6379")
    with pytest.raises(ValueError, match="a Sentinel URL starts with"):
        parse_sentinel_url("redis://h/jobs")


def test_the_command_line_takes_a_redis_url_and_refuses_a_malformed_one() -> None:
    """``--redis`` is checked before the worker starts; a malformed one stops it with the reason."""
    with pytest.raises(SystemExit, match=r"invalid --redis: .*path is /<master name>"):
        main(
            [
                "worker",
                "tests.jobs.process_app:mediator",
                "--queues",
                "default",
                "--redis",
                "redis+sentinel://h",
            ]
        )


def test_durable_enqueue_settings_are_checked() -> None:
    """Replicas and timeout must make sense, and the wait must end before the command timeout does."""
    with pytest.raises(ValueError, match="1 or more replicas for a positive time"):
        Durability(replicas=0)
    with pytest.raises(ValueError, match="1 or more replicas for a positive time"):
        Durability(timeout=0)
    with pytest.raises(ValueError, match=r"shorter than command_timeout \(1.0s\)"):
        Mediator(durable_enqueue=Durability(timeout=2.0), command_timeout=1.0)
    assert Mediator(durable_enqueue=True).durable_enqueue == Durability(replicas=1, timeout=1.0)
    assert Mediator().durable_enqueue is None


def test_a_call_overrides_the_mediator_durability() -> None:
    """``durable=None`` keeps the mediator's choice; ``True``, ``False`` or a `Durability` replace it."""
    default = Durability(replicas=2)
    assert durability_of(None, default) is default
    assert durability_of(False, default) is None
    assert durability_of(True, None) == Durability()
    assert durability_of(Durability(timeout=0.2), default) == Durability(timeout=0.2)
