"""The dashboard's small parts on their own: who counts as local, and how values read on the pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from litestar.connection import ASGIConnection

from arq_mediator.dashboard import allow_networks
from arq_mediator.dashboard._access import is_local
from arq_mediator.dashboard._format import count, duration, iso, percent, pretty_json, when


def connection_from(client: Any) -> ASGIConnection[Any, Any, Any, Any]:
    """Return a connection whose socket peer is *client* (as an ASGI server reports it)."""
    return ASGIConnection(scope=cast("Any", {"type": "http", "client": client, "headers": [], "path": "/"}))


@pytest.mark.parametrize(
    ("client", "local"),
    [
        (("127.0.0.1", 5000), True),
        (("127.8.9.10", 5000), True),
        (("::1", 5000), True),
        (("::ffff:127.0.0.1", 5000), True),
        (("::ffff:192.0.2.7", 5000), False),
        (("192.0.2.7", 5000), False),
        (("testclient", 50000), False),
        (None, False),
    ],
)
def test_local_means_a_loopback_socket_peer(client: Any, local: bool) -> None:
    """Loopback addresses (IPv4, IPv6, IPv4-mapped) are local; other addresses, names and no peer are not."""
    assert is_local(connection_from(client)) is local


def test_allow_networks_admits_peers_in_the_networks_only() -> None:
    """A peer inside a listed network is admitted, one outside or unknown is not; a bad CIDR is an error."""
    admit = allow_networks("10.0.0.0/8", "fd00::/8")
    assert admit(connection_from(("10.1.2.3", 1))) is True
    assert admit(connection_from(("fd00::2", 1))) is True
    assert admit(connection_from(("127.0.0.1", 1))) is False
    assert admit(connection_from(None)) is False
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        allow_networks("ten.zero")
    with pytest.raises(ValueError, match="at least one network"):
        allow_networks()  # a hook that silently refuses everyone is a configuration mistake


def test_times_read_in_utc() -> None:
    """Times show in UTC to the second; a naive time is taken as UTC; unknown is a dash."""
    moment = datetime(2026, 12, 3, 7, 30, 5, tzinfo=timezone(timedelta(hours=2)))
    assert when(moment) == "2026-12-03 05:30:05"
    assert when(datetime(2026, 12, 3, 5, 30, 5)) == "2026-12-03 05:30:05"
    assert when(None) == "—"
    assert iso(moment) == "2026-12-03T05:30:05+00:00"
    assert iso(datetime(2026, 12, 3, 5, 30, 5)) == "2026-12-03T05:30:05+00:00"
    assert iso(None) == ""


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "—"),
        (-1, "0 ms"),
        (0.84, "840 ms"),
        (3.21, "3.2 s"),
        (245, "4 min 5 s"),
        (7800, "2 h 10 min"),
        (3 * 86400 + 7200, "3 d 2 h"),
    ],
)
def test_durations_read_as_a_person_says_them(seconds: float | None, shown: str) -> None:
    """Durations pick the unit a person would."""
    assert duration(None if seconds is None else timedelta(seconds=seconds)) == shown


def test_numbers_json_and_progress() -> None:
    """Counts group thousands; JSON is indented with keys sorted; progress is a clamped percentage."""
    assert count(100000) == "100\u202f000"
    assert pretty_json({"b": 1, "a": datetime(2026, 1, 1, tzinfo=UTC)}) == (
        '{\n  "a": "2026-01-01 00:00:00+00:00",\n  "b": 1\n}'
    )
    assert percent(0.256) == "26%"
    assert percent(1.5) == "100%"
    assert percent(None) == "—"
