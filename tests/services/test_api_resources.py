"""The API beyond the demo: users, reports, jobs, health, OpenAPI, bad input and a dead Redis."""

from __future__ import annotations

import importlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from services.demo.messages import GenerateReport
from services.demo.models import User
from services.settings import Settings
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arq_mediator import Worker
from tests.services.api_harness import api_client, keys_in, on_redis, private_redis, running_worker

DEMO = "/api/distributeddemo"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Return an HTTP client of the API app, whose lifespan is open for the test."""
    async with api_client(settings) as client:
        yield client


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """Run a worker on every demo queue, of a mediator apart from the API's, as a worker process would."""
    async with running_worker(settings) as worker:
        yield worker


async def test_a_created_user_can_be_read_back(client: httpx.AsyncClient) -> None:
    """POST /api/users creates the user inline (201), and GET /api/users/{id} returns it."""
    created = await client.post("/api/users", json={"email": "grace@example.com", "name": "Grace Hopper"})

    assert created.status_code == 201
    user = created.json()
    assert (user["email"], user["name"]) == ("grace@example.com", "Grace Hopper")
    read = await client.get(f"/api/users/{user['id']}")
    assert read.status_code == 200
    assert read.json() == user


async def test_a_taken_email_is_a_409_that_says_so(client: httpx.AsyncClient) -> None:
    """Creating a user whose email exists answers 409 with the reason, not a 500."""
    await client.post("/api/users", json={"email": "linus@example.com", "name": "Linus"})

    again = await client.post("/api/users", json={"email": "linus@example.com", "name": "Linus again"})

    assert again.status_code == 409
    assert "linus@example.com exists already" in again.json()["detail"]


async def test_an_unknown_user_is_a_404(client: httpx.AsyncClient) -> None:
    """Reading a user id that does not exist answers 404."""
    response = await client.get("/api/users/987654321")

    assert response.status_code == 404
    assert "987654321" in response.json()["detail"]


async def test_a_report_is_accepted_and_its_job_shows_the_figures_from_the_database(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    """POST /api/reports answers 202 with a Location; polling it shows the report with real figures."""
    await client.post("/api/users", json={"email": "report-reader@example.com", "name": "Reader"})

    accepted = await client.post("/api/reports", json={"kind": "users", "title": "Who is here"})

    assert accepted.status_code == 202
    job_id = accepted.json()["jobId"]
    assert accepted.headers["location"] == accepted.json()["statusUrl"] == f"/api/jobs/{job_id}"
    await worker.mediator.job(job_id, GenerateReport).result(timeout=10)
    polled = await client.get(accepted.headers["location"])
    assert polled.status_code == 200
    job = polled.json()
    assert (job["id"], job["status"], job["queue"], job["error"]) == (job_id, "succeeded", "reports", None)
    assert (job["result"]["kind"], job["result"]["title"]) == ("users", "Who is here")
    sessions: async_sessionmaker[AsyncSession] = worker.mediator.resources[async_sessionmaker]
    async with sessions() as session:
        users = await session.scalar(select(func.count()).select_from(User))
    assert users is not None
    assert job["result"]["figures"]["users"] == users >= 1


async def test_a_queued_job_shows_its_status_without_a_result(client: httpx.AsyncClient) -> None:
    """With no worker, a report's job reads as queued, with no result or error yet."""
    accepted = await client.post("/api/reports", json={"kind": "usage", "title": "Later"})

    job = (await client.get(accepted.headers["location"])).json()

    assert (job["status"], job["result"], job["error"]) == ("queued", None, None)


async def test_an_unknown_job_is_a_404_and_keeps_its_ids_case(client: httpx.AsyncClient) -> None:
    """An unknown job id answers 404; the path matches in any case, but the id is not folded."""
    response = await client.get("/API/Jobs/NoSuchJob")

    assert response.status_code == 404
    assert "NoSuchJob" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        pytest.param(f"{DEMO}/stress-test?jobCount=0", None, "jobCount", id="jobCount=0"),
        pytest.param(f"{DEMO}/stress-test?jobCount=10001", None, "jobCount", id="jobCount=10001"),
        pytest.param(f"{DEMO}/stress-test?jobCount=abc", None, "jobCount", id="jobCount=abc"),
        pytest.param(f"{DEMO}/mixed-workload?reportCount=-1", None, "reportCount", id="reportCount=-1"),
        pytest.param(f"{DEMO}/mixed-workload?timeoutSeconds=0", None, "timeoutSeconds", id="timeout=0"),
        pytest.param(f"{DEMO}/scheduled-cascade?count=51", None, "count", id="count=51"),
        pytest.param(f"{DEMO}/scheduled-cascade?intervalSeconds=x", None, "intervalSeconds", id="interval=x"),
        pytest.param("/api/users", {"email": "a@example.com"}, "name", id="missing-field"),
        pytest.param(
            "/api/users", {"email": "a@example.com", "name": "A", "admin": True}, "admin", id="unknown"
        ),
        pytest.param("/api/users", {"email": "not-an-email", "name": "A"}, "email", id="bad-email"),
        pytest.param("/api/reports", {"kind": "weekly", "title": "T"}, "kind", id="bad-kind"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field_and_reaches_nothing(
    client: httpx.AsyncClient, settings: Settings, path: str, body: dict[str, Any] | None, field: str
) -> None:
    """Each bad parameter or body field answers 400 naming it, and nothing is written to Redis."""
    response = await client.post(path, json=body)

    assert response.status_code == 400
    problems = response.json()["extra"]
    assert field in [problem["key"] for problem in problems]
    assert await keys_in(settings.redis_url) == 0


async def test_malformed_json_is_a_400_that_says_so(client: httpx.AsyncClient, settings: Settings) -> None:
    """A body that is not JSON answers 400 saying it is malformed, and nothing reaches Redis."""
    response = await client.post(
        "/api/reports", content=b'{"kind": "usage", ', headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]
    assert await keys_in(settings.redis_url) == 0


async def test_health_is_ok_when_redis_and_the_database_answer(client: httpx.AsyncClient) -> None:
    """GET /health answers 200 with both dependencies ok."""
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "ok", "database": "ok"}


async def test_container_info_describes_the_api_process(client: httpx.AsyncClient) -> None:
    """GET /container-info names the role, host and runtime, like the original's."""
    info = (await client.get("/container-info")).json()

    assert (info["role"], info["serviceName"]) == ("api", "api")
    assert info["cpuCount"] >= 1
    assert {"machineName", "pythonVersion", "startedAt", "pid"} <= set(info)


async def test_the_openapi_document_lists_every_endpoint_and_the_uis_answer(
    client: httpx.AsyncClient,
) -> None:
    """/schema/openapi.json lists every path with a summary; Swagger UI, Scalar and Redoc answer."""
    document = (await client.get("/schema/openapi.json")).json()

    assert set(document["paths"]) == {
        f"{DEMO}/stress-test",
        f"{DEMO}/mixed-workload",
        f"{DEMO}/worker-stats",
        f"{DEMO}/scheduled-cascade",
        f"{DEMO}/trigger-all-recurring",
        "/container-info",
        "/health",
        "/api/users",
        "/api/users/{user_id}",
        "/api/reports",
        "/api/jobs/{job_id}",
    }
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert all(operation["summary"] for operation in operations)
    assert "jobCount" in document["components"]["schemas"]["StressTestOut"]["properties"]
    for ui in ("swagger", "scalar", "redoc"):
        page = await client.get(f"/schema/{ui}")
        assert page.status_code == 200
        assert "<html" in page.text.lower()


async def test_with_redis_stopped_health_and_enqueueing_answer_503(settings: Settings) -> None:
    """After Redis dies, /health names it as down and the enqueueing endpoints answer 503, never a 500."""
    with private_redis() as redis_server:
        async with api_client(on_redis(settings, redis_server.url)) as client:
            assert (await client.get("/health")).status_code == 200

            redis_server.stop()

            health = await client.get("/health")
            assert health.status_code == 503
            assert health.json()["status"] == "unavailable"
            assert health.json()["redis"].startswith("down: ")
            assert health.json()["database"] == "ok"
            for path, body in [
                (f"{DEMO}/stress-test?jobCount=10", None),
                (f"{DEMO}/mixed-workload?reportCount=1&userCount=1&timeoutSeconds=1", None),
                ("/api/reports", {"kind": "usage", "title": "T"}),
            ]:
                response = await client.post(path, json=body)
                assert response.status_code == 503, path
                assert "the job queue is unavailable" in response.json()["detail"]
                assert response.headers["retry-after"] == "5"


async def test_with_redis_frozen_every_endpoint_answers_503_within_seconds(settings: Settings) -> None:
    """A Redis that hangs (SIGSTOP) gets the same fast 503 as one that is down, from every endpoint."""
    with private_redis() as redis_server:
        async with api_client(on_redis(settings, redis_server.url)) as client:
            assert (await client.get("/health")).status_code == 200
            os.kill(redis_server.process.pid, signal.SIGSTOP)
            try:
                for method, path in [
                    ("GET", "/health"),
                    ("POST", f"{DEMO}/stress-test?jobCount=10"),
                    ("GET", f"{DEMO}/worker-stats"),
                    ("GET", "/api/jobs/no-such-job"),
                ]:
                    began = time.monotonic()
                    response = await client.request(method, path)
                    took = time.monotonic() - began
                    assert response.status_code == 503, (path, response.text)
                    assert took < 3.5, f"{path} took {took:.1f}s to answer while Redis was frozen"
            finally:
                os.kill(redis_server.process.pid, signal.SIGCONT)


def test_the_module_level_app_is_built_on_first_access_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """`services.api.app` builds its `app` from the environment when first read, and once."""
    module = importlib.import_module("services.api.app")
    monkeypatch.setattr(module, "_app", None)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never connected: building opens nothing

    app = module.app

    assert isinstance(app, Litestar)
    assert module.app is app
    with pytest.raises(AttributeError):
        _ = module.no_such_thing
