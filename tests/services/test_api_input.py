"""Every bad input is a 4xx that names what was wrong; a 5xx is logged with its traceback (issues 11, 17)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from services.settings import Settings

from arq_mediator import Mediator
from tests.services.api_harness import api_client, keys_in

DEMO = "/api/distributeddemo"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Return an HTTP client of the API app, whose lifespan is open for the test."""
    async with api_client(settings) as client:
        yield client


def problem_keys(response: httpx.Response) -> list[str]:
    """Return the field names a 400 answer names."""
    return [problem["key"] for problem in response.json()["extra"]]


@pytest.mark.parametrize("user_id", [str(2**63), str(2**64), str(2**31), "abc", "5.0", "0"])
async def test_a_user_id_out_of_range_or_not_a_whole_number_is_a_400_naming_it(
    client: httpx.AsyncClient, user_id: str
) -> None:
    """/api/users/{id} with an id past the column's range, or not a whole number: a 400, not a 500 or 404."""
    response = await client.get(f"/api/users/{user_id}")

    assert response.status_code == 400, response.text
    assert problem_keys(response) == ["user_id"]


@pytest.mark.parametrize("value", ["1e4", "5.0", "0x10", ""])
async def test_an_integer_query_parameter_refuses_fractions_and_exponents(
    client: httpx.AsyncClient, settings: Settings, value: str
) -> None:
    """jobCount=1e4 or 5.0 is a 400 naming jobCount, and nothing is queued."""
    response = await client.post(f"{DEMO}/stress-test?jobCount={value}")

    assert response.status_code == 400, response.text
    assert problem_keys(response) == ["jobCount"]
    assert await keys_in(settings.redis_url) == 0


async def test_query_parameter_names_bind_in_any_case(client: httpx.AsyncClient) -> None:
    """`jobcount=5` queues 5 jobs like `jobCount=5`, not the default 50; other names fold the same way."""
    lower = await client.post(f"{DEMO}/stress-test?jobcount=5")
    upper = await client.post(f"{DEMO}/STRESS-TEST?JOBCOUNT=7")
    cascade = await client.post(f"{DEMO}/scheduled-cascade?COUNT=2&intervalseconds=600")
    refused = await client.post(f"{DEMO}/mixed-workload?reportcount=-1&USERCOUNT=0")

    assert (lower.status_code, lower.json()["totalJobs"]) == (200, 5)
    assert (upper.status_code, upper.json()["totalJobs"]) == (200, 7)
    assert (cascade.json()["count"], cascade.json()["intervalSeconds"]) == (2, 600)
    assert (refused.status_code, problem_keys(refused)) == (400, ["reportCount"])


@pytest.mark.parametrize("path", ["/api/users", "/api/reports"])
async def test_a_missing_json_body_is_a_400_saying_what_to_send(
    client: httpx.AsyncClient, settings: Settings, path: str
) -> None:
    """No body at all is a 400 saying the body is missing and which fields to send, not "'data'"."""
    response = await client.post(path, headers={"content-type": "application/json"})

    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith("the request body is missing: send a JSON object with ")
    assert ("email, name" if path == "/api/users" else "kind, title") in detail
    assert await keys_in(settings.redis_url) == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"email=a%40example.com&name=A", "application/x-www-form-urlencoded"),
        (b"<user><email>a@example.com</email></user>", "application/xml"),
        (b'{"email": "a@example.com", "name": "A"}', "text/plain"),
    ],
)
async def test_a_body_that_is_not_json_is_a_415(
    client: httpx.AsyncClient, settings: Settings, content: bytes, content_type: str
) -> None:
    """A form, XML or text body is a 415 naming the media type sent and the one to send."""
    response = await client.post("/api/users", content=content, headers={"content-type": content_type})

    assert response.status_code == 415, response.text
    assert content_type in response.json()["detail"]
    assert "application/json" in response.json()["detail"]
    assert await keys_in(settings.redis_url) == 0


async def test_json_with_a_charset_is_read(client: httpx.AsyncClient) -> None:
    """`application/json; charset=utf-8` is JSON."""
    response = await client.post(
        "/api/reports",
        content=b'{"kind": "usage", "title": "T"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 202, response.text


class Records(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep *record*."""
        self.records.append(record)


@pytest.fixture
def api_log() -> Iterator[Records]:
    """Collect what the API logs (Litestar's logging set-up replaces the root logger's handlers)."""
    records = Records()
    logger = logging.getLogger("services.api")
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)


async def test_a_server_error_is_logged_with_its_traceback(
    client: httpx.AsyncClient, api_log: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception answers 500 and the API logs it as an error with the traceback."""

    async def broken(self: Mediator, *args: Any) -> None:
        raise RuntimeError("the stats broke")

    monkeypatch.setattr(Mediator, "stats", broken)

    response = await client.get(f"{DEMO}/worker-stats")
    refused = await client.get("/api/users/abc")

    assert response.status_code == 500
    [record] = api_log.records
    assert record.levelno == logging.ERROR
    assert "GET /api/distributeddemo/worker-stats failed with RuntimeError" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert refused.status_code == 400  # and a refusal of bad input is not logged as an error


async def test_a_client_over_its_job_budget_gets_a_429_and_nothing_is_queued(settings: Settings) -> None:
    """A budget of 10 jobs a minute: 8 fit, the next 5 are refused whole with Retry-After; reads go on."""
    async with api_client(Settings(**{**vars_of(settings), "job_budget": 10})) as client:
        first = await client.post(f"{DEMO}/stress-test?jobCount=8")
        over = await client.post(f"{DEMO}/stress-test?jobCount=5")
        report = await client.post("/api/reports", json={"kind": "usage", "title": "T"})
        stats = await client.get(f"{DEMO}/worker-stats")

    assert first.status_code == 200
    assert over.status_code == 429
    assert int(over.headers["retry-after"]) >= 1
    assert "10 jobs per minute" in over.json()["detail"]
    assert report.status_code == 202  # the one job still fits: 9 of 10
    assert stats.json()["totals"]["ready"] == 9


def vars_of(settings: Settings) -> dict[str, Any]:
    """Return *settings* as keyword arguments."""
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


async def test_created_at_has_an_offset_on_sqlite_when_created_and_when_read(
    clean_redis: str, tmp_path: Path
) -> None:
    """On SQLite too, a user's created_at carries its UTC offset, the same when created and when read."""
    settings = Settings(
        redis_url=clean_redis,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'demo.sqlite3'}",
        work_scale=0.0,
        email_failure_rate=0.0,
    )
    async with api_client(settings) as client:
        created = await client.post("/api/users", json={"email": "tz@example.com", "name": "Zone"})
        read = await client.get(f"/api/users/{created.json()['id']}")

    assert created.status_code == 201, created.text
    assert read.json() == created.json()
    assert read.json()["created_at"].endswith(("Z", "+00:00"))


async def test_the_originals_swagger_path_answers(client: httpx.AsyncClient) -> None:
    """/swagger, the original's Swagger UI path, leads to the Swagger UI."""
    response = await client.get("/swagger", follow_redirects=True)

    assert response.status_code == 200
    assert "swagger" in response.text.lower()


async def test_the_swagger_ui_loads_nothing_from_another_origin(client: httpx.AsyncClient) -> None:
    """The Swagger UI page links only assets the API serves itself, and each of them answers."""
    page = await client.get("/schema/swagger")
    linked = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)

    assert page.status_code == 200
    assert len(linked) == 3, linked
    for url in linked:
        assert url.startswith("/schema/assets/swagger-ui/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 10_000, url
