"""How test runs share one Redis server: each claims databases of its own, and says so when none are left."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from redis import Redis

from tests.conftest import StartRedisServer
from tests.redis_databases import ROLES, DatabasesUnavailableError, RedisDatabases, claim_key, url_for

# Database 0 for the claims, and room for two runs' six databases: a third run finds none.
DATABASES = 1 + 2 * len(ROLES)


@pytest.fixture
async def server(redis_servers: StartRedisServer) -> str:
    """Return the URL of a private redis-server with `DATABASES` databases, stopped when the test ends."""
    return (await redis_servers("--databases", str(DATABASES))).url


@contextmanager
def run(server: str, **environ: str) -> Iterator[RedisDatabases]:
    """Stand for a test run on *server* (with *environ* as its environment) for the block."""
    databases = RedisDatabases(server, environ=environ)
    try:
        yield databases
    finally:
        databases.close()


def numbers(databases: RedisDatabases) -> set[int]:
    """Return the database numbers *databases* claimed, one per role."""
    return {databases.number(role) for role in ROLES}


def test_two_runs_claim_different_databases_and_a_third_is_told_why_it_cannot(server: str) -> None:
    """Two runs at once get disjoint databases (never 0); a third fails naming the runs holding them all."""
    with run(server) as first, run(server) as second:
        assert numbers(first).isdisjoint(numbers(second))
        assert 0 not in numbers(first) | numbers(second)
        assert len(numbers(first) | numbers(second)) == 2 * len(ROLES)
        with run(server) as third, pytest.raises(DatabasesUnavailableError, match="held by other test runs"):
            third.number("jobs")


def test_claims_are_released_at_the_end_of_a_run(server: str) -> None:
    """A run that ended leaves no claim behind, so the next run can take the same databases."""
    with run(server) as first:
        taken = numbers(first)
    client = Redis.from_url(server)
    try:
        assert all(client.get(claim_key(number)) is None for number in taken)
    finally:
        client.close()
    with run(server) as later:
        assert numbers(later) == taken


def test_a_database_holding_keys_no_test_run_wrote_is_passed_over(server: str) -> None:
    """Someone else's data in a database keeps the tests away from it; a run's own leftovers do not."""
    foreign = Redis.from_url(url_for(server, 1))
    try:
        foreign.set("someone-else", "keep me")
        with run(server) as first:
            assert 1 not in numbers(first)
            leftover = Redis.from_url(first.url("jobs"))
            leftover.set("left by a run that died", "1")
            leftover.close()
            jobs = first.number("jobs")
        with run(server) as later:
            assert jobs in numbers(later)
        assert foreign.get("someone-else") == b"keep me"
    finally:
        foreign.close()


def test_a_pinned_database_held_by_another_run_fails_naming_the_variable(server: str) -> None:
    """A role pinned by its variable to a database another run holds fails, naming the variable."""
    with run(server) as first:
        held = first.number("services")
        with (
            run(server, ARQM_TEST_REDIS_DB=str(held)) as second,
            pytest.raises(DatabasesUnavailableError, match="pinned by ARQM_TEST_REDIS_DB"),
        ):
            second.number("jobs")
        with run(server, ARQM_TEST_REDIS_DB="0") as third, pytest.raises(DatabasesUnavailableError):
            third.number("jobs")
