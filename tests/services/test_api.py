"""The API's demo endpoints (the original's, at its paths), against real Redis, PostgreSQL and a worker."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from services.api.demo_routes import stress_messages
from services.demo.handlers import RECURRING
from services.demo.messages import CreateUser, DuplicateEmail, SendEmail, UserOut
from services.demo.models import EmailAttempt, User
from services.settings import Settings
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arq_mediator import Context, JobStatus, Mediator, ResultRecord, Worker
from tests.jobs.waiting import polled
from tests.services.api_harness import (
    ALL_QUEUES,
    api_client,
    result_records,
    running_worker,
    running_worker_of,
)

Client = httpx.AsyncClient
DEMO = "/api/distributeddemo"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    """Return an HTTP client of the API app, whose lifespan is open for the test."""
    async with api_client(settings) as client:
        yield client


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """Run a worker on every demo queue, of a mediator apart from the API's, as a worker process would."""
    async with running_worker(settings) as worker:
        yield worker


def sessions(worker: Worker) -> async_sessionmaker[AsyncSession]:
    """Return the worker's database session factory, to look at the rows its jobs wrote."""
    factory: async_sessionmaker[AsyncSession] = worker.mediator.resources[async_sessionmaker]
    return factory


async def count_users_like(worker: Worker, pattern: str) -> int:
    """Return how many users have an email matching the SQL LIKE *pattern*."""
    async with sessions(worker)() as session:
        return await session.scalar(select(func.count()).where(User.email.like(pattern))) or 0


def test_the_stress_split_of_100_jobs_is_the_originals() -> None:
    """Jobs 1..100 split into cleanup 40, emails 25, reports 25, critical 10, as the route documents."""
    split = Counter(type(message).__name__ for message in stress_messages(100, "batch"))
    assert split == {"Cleanup": 40, "SendEmail": 25, "GenerateReport": 25, "CreateUser": 10}


async def test_stress_test_enqueues_100_jobs_and_every_one_is_accounted_for(
    client: Client, worker: Worker, settings: Settings
) -> None:
    """A stress test of 100 answers the per-queue split, and after the drain all 100 jobs succeeded."""
    users_before = await count_users_like(worker, "stress-%")

    response = await client.post(f"{DEMO}/stress-test?jobCount=100")

    assert response.status_code == 200
    body = response.json()
    assert body["queues"] == {"cleanup": 40, "emails": 25, "reports": 25, "critical": 10}
    assert (body["jobCount"], body["totalJobs"], len(body["jobs"])) == (100, 100, 10)

    def ours(records: list[ResultRecord]) -> list[ResultRecord]:
        # A recurring tick may land in the window; it is not one of the stress test's jobs.
        return [record for record in records if not record.id.startswith("recurring:")]

    # 100 jobs, plus the welcome email and audit record that each of the 10 new users fans out to.
    records = ours(
        await polled(lambda: result_records(settings.redis_url), lambda r: len(ours(r)) >= 120, 30)
    )
    assert len(records) == 120
    assert all(record.ok for record in records)
    assert Counter(record.queue for record in records) == {
        "cleanup": 40,
        "emails": 25 + 10,
        "reports": 25,
        "critical": 10,
        "default": 10,
    }
    for job_id in body["jobs"]:
        assert await worker.mediator.job(job_id).status() is JobStatus.SUCCEEDED
    stats = await worker.mediator.stats()
    assert {key: stats.totals[key] for key in ("ready", "running", "deferred", "failed")} == dict.fromkeys(
        ("ready", "running", "deferred", "failed"), 0
    )
    assert await count_users_like(worker, "stress-%") == users_before + 10


async def test_stress_test_paths_match_in_any_case(client: Client) -> None:
    """The original's paths are case-insensitive, and so are ours."""
    response = await client.post("/API/DistributedDemo/Stress-Test?jobCount=4")

    assert response.status_code == 200
    assert response.json()["totalJobs"] == 4


async def test_mixed_workload_returns_every_item_with_its_index_and_kind(
    client: Client, worker: Worker
) -> None:
    """Five reports and ten users come back as 15 items, indexed in submission order, each succeeded."""
    response = await client.post(f"{DEMO}/mixed-workload?reportCount=5&userCount=10&timeoutSeconds=30")

    assert response.status_code == 200
    body = response.json()
    items = body["items"]
    assert [item["index"] for item in items] == list(range(15))
    assert [item["kind"] for item in items] == ["report"] * 5 + ["user"] * 10
    assert {item["status"] for item in items} == {"succeeded"}
    assert all("figures" in item["result"] for item in items[:5])
    assert all(item["result"]["email"].startswith("mixed-") for item in items[5:])
    assert len({item["jobId"] for item in items}) == 15
    assert (body["succeeded"], body["failed"], body["stillRunning"]) == (15, 0, 0)


async def test_mixed_workload_reports_a_failed_item_with_its_error(
    client: Client, settings: Settings
) -> None:
    """A job that fails for good is an item with the remote error's type and message, not a 500."""
    refusing = Mediator(redis=settings.redis_url)

    @refusing.handler(queue="critical")
    async def refuse(request: CreateUser, ctx: Context) -> UserOut:
        raise DuplicateEmail(f"a user with email {request.email} exists already")

    async with (
        running_worker(settings, queues=("reports",)),
        refusing,
        running_worker_of(refusing, queues=("critical",)),
    ):
        response = await client.post(f"{DEMO}/mixed-workload?reportCount=1&userCount=2&timeoutSeconds=30")

    assert response.status_code == 200
    items = response.json()["items"]
    assert [(item["index"], item["kind"], item["status"]) for item in items] == [
        (0, "report", "succeeded"),
        (1, "user", "failed"),
        (2, "user", "failed"),
    ]
    assert items[1]["error"]["type"] == "services.demo.messages.DuplicateEmail"
    assert "exists already" in items[1]["error"]["message"]
    assert items[1]["result"] is None


async def test_mixed_workload_past_its_timeout_is_a_202_listing_the_pending_jobs(client: Client) -> None:
    """With no worker, the timeout passes first: 202 (not 408), no finished items, each pending job listed."""
    response = await client.post(f"{DEMO}/mixed-workload?reportCount=1&userCount=2&timeoutSeconds=0.3")

    assert response.status_code == 202
    body = response.json()
    assert (body["items"], body["stillRunning"], body["succeeded"]) == ([], 3, 0)
    assert "still running" in body["message"]
    assert [(item["index"], item["kind"]) for item in body["pending"]] == [
        (0, "report"),
        (1, "user"),
        (2, "user"),
    ]
    for item in body["pending"]:
        assert item["statusUrl"] == f"/api/jobs/{item['jobId']}"
        assert (await client.get(item["statusUrl"])).json()["status"] == "queued"


async def test_an_empty_mixed_workload_answers_at_once_with_no_items(client: Client) -> None:
    """reportCount=0&userCount=0, which the OpenAPI document allows, is a 200 with nothing in it."""
    response = await client.post(f"{DEMO}/mixed-workload?reportCount=0&userCount=0")

    assert response.status_code == 200
    body = response.json()
    assert (body["items"], body["pending"], body["succeeded"], body["stillRunning"]) == ([], [], 0, 0)


async def test_worker_stats_lists_every_queue_and_the_live_worker(client: Client, worker: Worker) -> None:
    """Worker stats give per-queue counts, the live worker with its counters and heartbeat, and totals."""
    await client.post(f"{DEMO}/scheduled-cascade?count=2&intervalSeconds=600")

    async def stats() -> Any:
        return (await client.get(f"{DEMO}/worker-stats")).json()

    body = await polled(stats, lambda b: any(w["name"] == "test-worker" for w in b["workers"]))

    assert set(ALL_QUEUES) <= set(body["queues"])
    assert body["queues"]["emails"] == {"ready": 0, "deferred": 2, "running": 0, "failed": 0}
    (listed,) = [w for w in body["workers"] if w["name"] == "test-worker"]
    assert listed["queues"] == list(ALL_QUEUES)
    assert listed["maxJobs"] == 20
    assert {"running", "succeeded", "failed", "retried", "host", "pid", "instance"} <= set(listed)
    last_seen = datetime.fromisoformat(listed["lastSeen"])
    assert abs(datetime.now(UTC) - last_seen) < timedelta(seconds=10)
    assert body["totals"]["deferred"] == 2
    assert body["totals"]["workers"] >= 1
    assert body["totals"]["capacity"] >= 20


async def test_scheduled_cascade_runs_its_emails_in_order_at_their_times(
    client: Client, worker: Worker
) -> None:
    """Emails 0.2 s apart each start no earlier than scheduled, in sequence order."""
    response = await client.post(f"{DEMO}/scheduled-cascade?count=4&intervalSeconds=0.2")

    assert response.status_code == 200
    jobs = response.json()["jobs"]
    assert [job["sequence"] for job in jobs] == [1, 2, 3, 4]
    records = []
    for job in jobs:
        await worker.mediator.job(job["jobId"], SendEmail).result(timeout=10)
        records.append(await worker.mediator.job(job["jobId"]).record())
    for job, record in zip(jobs, records, strict=True):
        assert record is not None
        scheduled_ms = datetime.fromisoformat(job["scheduledAt"]).timestamp() * 1000
        assert record.started_at >= scheduled_ms - 1
    starts = [record.started_at for record in records if record is not None]
    assert starts == sorted(starts)
    async with sessions(worker)() as session:
        logged = await session.scalars(
            select(EmailAttempt.job_id)
            .where(EmailAttempt.job_id.in_([job["jobId"] for job in jobs]))
            .order_by(EmailAttempt.id)
        )
        assert list(logged) == [job["jobId"] for job in jobs]


async def test_trigger_all_recurring_enqueues_the_three_jobs_and_they_succeed(
    client: Client, worker: Worker
) -> None:
    """Each of the three recurring jobs is enqueued now and succeeds; its status is readable over HTTP."""
    response = await client.post(f"{DEMO}/trigger-all-recurring")

    assert response.status_code == 200
    triggered = response.json()["triggered"]
    assert [entry["name"] for entry in triggered] == list(RECURRING)
    for entry in triggered:
        await worker.mediator.job(entry["jobId"]).result(timeout=10)
        status = await client.get(f"/api/jobs/{entry['jobId']}")
        assert status.json()["status"] == "succeeded"
