"""Configuration: Redis connections with timeouts, worker settings checked, what a worker says at start."""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from arq.connections import RedisSettings
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from arq_mediator import Mediator, QueueUnavailableError, Request, WorkerSettings
from arq_mediator._connection import Timeouts, open_client
from arq_mediator._worker_settings import describe_capabilities

from .conftest import running_worker
from .waiting import FAST


class Ping(Request[str]):
    pass


async def ping(request: Ping) -> str:
    return "pong"


async def test_arq_redis_settings_open_a_client_with_the_timeouts(redis_url: str) -> None:
    """arq `RedisSettings` open a client on its host, port and database, with both timeouts set."""
    parts = urlsplit(redis_url)
    database = int(parts.path.lstrip("/"))
    settings = RedisSettings(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, database=database)
    client = open_client(settings, Timeouts(connect=1.5, command=2.5))
    try:
        assert await client.ping()
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["db"], kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (
            database,
            1.5,
            2.5,
        )
    finally:
        await client.aclose()


def test_sentinel_settings_give_a_client_of_the_named_master() -> None:
    """Sentinel settings give a client that asks the sentinels for the master (connecting only when used)."""
    settings = RedisSettings(host=[("127.0.0.1", 26379)], sentinel=True, sentinel_master="jobs")
    client = open_client(settings, Timeouts())
    assert isinstance(client, Redis)
    assert client.connection_pool.service_name == "jobs"  # type: ignore[attr-defined]


def test_timeouts_must_be_positive() -> None:
    """A zero or negative timeout is refused, naming both values."""
    with pytest.raises(ValueError, match="Redis timeouts must be positive"):
        Timeouts(connect=0)
    with pytest.raises(ValueError, match="keep_failed must be positive"):
        Mediator(keep_failed=0)
    with pytest.raises(ValueError, match="keep_result must be positive"):
        Mediator(keep_result=timedelta(0))
    with pytest.raises(ValueError, match="max_job_bytes must be at least 1024"):
        Mediator(max_job_bytes=10)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_lost": 0}, "max_lost must be at least 1"),
        ({"grace": -1.0}, "grace zero or more"),
        ({"idle_check": 0.0}, "idle_check positive"),
        ({"unknown_type_delay": -1.0}, "unknown_type_delay and unknown_type_timeout"),
    ],
)
def test_worker_settings_refuse_values_that_cannot_work(options: dict[str, float], message: str) -> None:
    """Each worker setting out of its range is refused with a message naming it."""
    with pytest.raises(ValueError, match=message):
        WorkerSettings(queues=["default"], **options)  # type: ignore[arg-type]


def test_a_starting_worker_says_what_it_runs_and_what_looks_wrong(caplog: pytest.LogCaptureFixture) -> None:
    """A worker logs its request types per queue, warns of a queue no handler uses, errs with no handlers."""
    mediator = Mediator()
    mediator.handler(queue="critical")(ping)
    with caplog.at_level(logging.INFO, logger="arq_mediator.worker"):
        describe_capabilities(mediator, "w1", ["critical", "typo"], 4)
        describe_capabilities(Mediator(), "w2", ["default"], 4)
    messages = [record.getMessage() for record in caplog.records]
    assert f"worker w1 runs on queue critical: {Ping.message_name}" in messages
    assert any("serves queue typo, but no handler sends its jobs there" in m for m in messages)
    assert any(m.startswith("worker w2 has no handlers at all") for m in messages)


async def test_a_mediator_opens_while_redis_is_down_and_fails_fast_on_use() -> None:
    """Opening needs no Redis; a call then fails with QueueUnavailableError, Redis's error its cause."""
    mediator = Mediator(redis="redis://127.0.0.1:1/0", connect_timeout=0.5)
    mediator.handler(ping)
    async with mediator:
        with pytest.raises(QueueUnavailableError, match=r"connecting to 127\.0\.0\.1:1") as caught:
            await mediator.enqueue(Ping())
        with pytest.raises(QueueUnavailableError):
            await mediator.ping()
    assert isinstance(caught.value.__cause__, RedisConnectionError)


async def test_a_worker_serves_through_a_mediator_built_from_settings(redis_url: str) -> None:
    """A mediator built from arq RedisSettings runs jobs like one built from a URL."""
    parts = urlsplit(redis_url)
    database = int(parts.path.lstrip("/"))
    settings = RedisSettings(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, database=database)
    mediator = Mediator(redis=settings)
    mediator.handler(ping)
    async with mediator, running_worker(mediator, **FAST):
        assert await (await mediator.enqueue(Ping())).result(timeout=5) == "pong"
