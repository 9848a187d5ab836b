"""The worker entrypoint, ``python -m services.worker general|balanced|heavy``, as real processes.

Each test starts worker processes on the test's Redis database and PostgreSQL database, reads what they
print and what their heartbeats publish, and stops them by PID (in the fixture's finalizer too).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from services.demo.handlers import build_mediator
from services.demo.messages import Cleanup, CreateUser, GenerateReport, SendEmail, UserCreated
from services.embedded_redis import EmbeddedRedisError, start_redis
from services.settings import Settings
from services.worker.profiles import ConfigurationError, configure

from arq_mediator import JobHandle, JobStatus, Mediator, Stats, WorkerState
from tests.jobs.waiting import polled
from tests.processes import ROOT, ManagedProcess, ManagedProcesses, free_port
from tests.services.service_processes import clean_environment, worker_environment

BANNERS = {
    "general": "Configuring as WORKER container: Worker-1 (max 20 concurrent jobs), "
    "queues: critical, default, emails, reports, cleanup",
    "balanced": "Configuring as WORKER container: Worker-2 (max 15 concurrent jobs), "
    "queues: critical, emails, default, cleanup, reports",
    "heavy": "Configuring as WORKER container: Worker-3-Heavy (max 5 concurrent jobs), "
    "queues: reports, cleanup",
}

NAMES = {"general": "Worker-1", "balanced": "Worker-2", "heavy": "Worker-3-Heavy"}


@pytest.fixture
async def demo(settings: Settings) -> AsyncIterator[Mediator]:
    """Return an open demo mediator on the test's Redis and database, to enqueue jobs and read stats with."""
    async with build_mediator(settings) as mediator:
        yield mediator


def start_worker(
    processes: ManagedProcesses, settings: Settings, *arguments: str, **variables: str
) -> ManagedProcess:
    """Start ``python -m services.worker *arguments*`` on the test's settings plus *variables*."""
    name = "-".join(["worker", *arguments]) + f"-{len(processes.started)}"
    return processes.start(
        name, ["-m", "services.worker", *arguments], worker_environment(settings, **variables)
    )


async def registered(demo: Mediator, name: str, worker: ManagedProcess) -> WorkerState:
    """Wait for the heartbeat of the worker named *name*; return what it published."""

    async def stats() -> Stats:
        assert worker.process.poll() is None, f"{worker.name} exited:\n{worker.output()}"
        return await demo.stats()

    found = await polled(
        stats,
        lambda stats: any(state.name == name for state in stats.workers),
        timeout=30.0,
        interval=0.05,
        what=f"a heartbeat of {name}",
    )
    return next(state for state in found.workers if state.name == name)


@pytest.mark.parametrize("profile", ["general", "balanced", "heavy"])
async def test_each_profile_says_what_it_is_runs_as_that_and_exits_zero_on_sigterm(
    processes: ManagedProcesses, settings: Settings, demo: Mediator, profile: str
) -> None:
    """A profile prints the original's start-up line with its queues, registers as such, and stops cleanly."""
    worker = start_worker(processes, settings, profile)

    output = await worker.printed(BANNERS[profile])
    state = await registered(demo, NAMES[profile], worker)
    returncode = await worker.stop()

    assert output.splitlines()[0] == BANNERS[profile]
    assert ", ".join(state.queues) == BANNERS[profile].split("queues: ")[1]
    assert state.max_jobs == {"general": 20, "balanced": 15, "heavy": 5}[profile]
    assert returncode == 0, worker.output()
    assert f"worker {NAMES[profile]} stopped" in worker.output()


async def test_the_environment_overrides_profile_name_cap_and_queues(
    processes: ManagedProcesses, settings: Settings, demo: Mediator
) -> None:
    """WORKER_PROFILE stands in for the argument; WORKER_NAME, MAX_CONCURRENT_JOBS, WORKER_QUEUES override."""
    worker = start_worker(
        processes,
        settings,
        WORKER_PROFILE="heavy",
        WORKER_NAME="Edge-7",
        MAX_CONCURRENT_JOBS="3",
        WORKER_QUEUES=" emails, critical ",
    )

    banner = "Configuring as WORKER container: Edge-7 (max 3 concurrent jobs), queues: emails, critical"
    await worker.printed(banner)
    state = await registered(demo, "Edge-7", worker)

    assert (state.queues, state.max_jobs) == (["emails", "critical"], 3)
    assert await worker.stop() == 0, worker.output()


@pytest.mark.parametrize(
    ("arguments", "variables", "message"),
    [
        (["general"], {"MAX_CONCURRENT_JOBS": "lots"}, "MAX_CONCURRENT_JOBS must be a whole number"),
        (["general"], {"MAX_CONCURRENT_JOBS": "0"}, "MAX_CONCURRENT_JOBS must be from 1 to 1000, got 0"),
        (["heavy"], {"WORKER_QUEUES": "reports,,cleanup"}, "WORKER_QUEUES must be a comma-separated list"),
        (["heavy"], {"WORKER_QUEUES": "reports,invoices"}, "WORKER_QUEUES names invoices"),
        (["gigantic"], {}, "unknown worker profile 'gigantic'; choose one of general, balanced, heavy"),
        ([], {}, "name a worker profile (general, balanced, heavy)"),
        (["general"], {"WORKER_HTTP_PORT": "http"}, "WORKER_HTTP_PORT must be a whole number"),
    ],
)
def test_an_invalid_setting_exits_non_zero_naming_it_before_connecting(
    arguments: list[str], variables: dict[str, str], message: str
) -> None:
    """A bad profile or override ends the process with status 1 and a message naming it; nothing starts."""
    environment = clean_environment(
        REDIS_URL="redis://127.0.0.1:1",
        DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        **variables,
    )

    completed = subprocess.run(
        [sys.executable, "-m", "services.worker", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 1, completed
    assert message in completed.stderr
    assert completed.stderr.startswith("services.worker: ")
    assert "Configuring as WORKER" not in completed.stdout
    assert "Traceback" not in completed.stderr


def test_the_command_line_profile_wins_over_worker_profile() -> None:
    """Given both, the argument decides the profile; the environment's overrides still apply."""
    config = configure("balanced", {"WORKER_PROFILE": "heavy", "MAX_CONCURRENT_JOBS": "7"})

    assert (config.profile, config.name, config.max_jobs) == ("balanced", "Worker-2", 7)
    assert config.http_port is None
    with pytest.raises(ConfigurationError, match="WORKER_QUEUES lists a queue twice"):
        configure("general", {"WORKER_QUEUES": "emails,emails"})


async def test_the_health_port_serves_health_and_worker_info_and_no_api_route(
    processes: ManagedProcesses, settings: Settings, demo: Mediator
) -> None:
    """With WORKER_HTTP_PORT, a worker answers /health and /worker-info (live counters), and nothing else."""
    port = free_port()
    worker = start_worker(
        processes, settings, "heavy", WORKER_HTTP_PORT=str(port), WORKER_HTTP_HOST="127.0.0.1"
    )
    await worker.printed(f"Worker Info: http://127.0.0.1:{port}/worker-info")

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:

        async def health() -> httpx.Response:
            assert worker.process.poll() is None, worker.output()
            try:
                return await client.get("/health")
            except httpx.TransportError:  # not listening yet
                return httpx.Response(599)

        answer = await polled(health, lambda r: r.status_code == 200, timeout=30.0, interval=0.05)
        await registered(demo, "Worker-3-Heavy", worker)
        report = await (await demo.enqueue(GenerateReport(title="health check"))).result(timeout=30.0)

        async def info() -> dict[str, Any]:
            body: dict[str, Any] = (await client.get("/worker-info")).json()
            return body

        # The counters move a moment after the result is out: the job's task ends after it reports.
        details = await polled(
            info, lambda body: (body["running"], body["succeeded"]) == (0, 1), timeout=10.0, interval=0.05
        )
        stress = await client.post("/api/distributeddemo/stress-test?jobCount=5")
        schema = await client.get("/schema")

    assert answer.json() == {"status": "ok", "redis": "ok", "database": "ok"}
    assert report.title == "health check"
    assert details["role"] == "worker"
    assert details["workerName"] == "Worker-3-Heavy"
    assert details["queues"] == ["reports", "cleanup"]
    assert details["maxConcurrentJobs"] == 5
    assert (details["running"], details["succeeded"], details["failed"]) == (0, 1, 0)
    assert details["cpuCount"] >= 1
    assert details["machineName"]
    assert details["startedAt"]
    assert (stress.status_code, schema.status_code) == (404, 404)
    assert await worker.stop() == 0, worker.output()


async def test_health_answers_503_while_redis_is_down(
    processes: ManagedProcesses, postgres_url: str, tmp_path: Path
) -> None:
    """A worker whose Redis stops answers /health with 503 naming Redis, and still exits 0 on SIGTERM."""
    try:
        redis = start_redis(tmp_path / "redis")
    except EmbeddedRedisError as error:
        pytest.skip(str(error))
    try:
        settings = Settings(
            redis_url=redis.url, database_url=postgres_url, work_scale=0, email_failure_rate=0
        )
        port = free_port()
        worker = start_worker(
            processes, settings, "heavy", WORKER_HTTP_PORT=str(port), WORKER_HTTP_HOST="127.0.0.1"
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:

            async def health() -> httpx.Response:
                assert worker.process.poll() is None, worker.output()
                try:
                    return await client.get("/health")
                except httpx.TransportError:
                    return httpx.Response(599)

            await polled(health, lambda r: r.status_code == 200, timeout=30.0, interval=0.05)
            redis.stop()
            down = await polled(health, lambda r: r.status_code != 200, timeout=10.0, interval=0.05)
    finally:
        redis.stop()

    assert down.status_code == 503
    body = down.json()
    assert (body["status"], body["database"]) == ("unavailable", "ok")
    assert body["redis"].startswith("down: ")
    assert await worker.stop() == 0, worker.output()


async def test_the_heavy_worker_never_takes_a_job_outside_reports_and_cleanup(
    processes: ManagedProcesses, settings: Settings, demo: Mediator
) -> None:
    """Alone with jobs on all five queues, Worker-3-Heavy runs reports and cleanups and leaves the rest."""
    worker = start_worker(processes, settings, "heavy")
    await registered(demo, "Worker-3-Heavy", worker)
    tag = uuid.uuid4().hex[:8]
    # Its foreign jobs are queued first: were it to take any queue outside its set, it would take these.
    outside: list[JobHandle[Any]] = []
    for i in range(4):
        outside.append(await demo.enqueue(CreateUser(email=f"heavy-{tag}-{i}@example.com", name=f"User {i}")))
        outside.append(await demo.enqueue(SendEmail(recipient=f"heavy-{tag}-{i}@example.com", subject="Hi")))
        outside += await demo.enqueue_publish(
            UserCreated(user_id=i, email=f"heavy-{tag}-{i}@example.com", name="U")
        )
    inside: list[JobHandle[Any]] = []
    for i in range(6):
        inside.append(await demo.enqueue(GenerateReport(title=f"Report {i}")))
        inside.append(await demo.enqueue(Cleanup(older_than_days=30)))

    for handle in inside:
        await handle.result(timeout=30.0)
    stats = await demo.stats()
    statuses = [await handle.status() for handle in outside]

    queues = {queue.name: queue for queue in stats.queues}
    assert {handle.queue for handle in outside} == {"critical", "emails", "default"}
    assert statuses == [JobStatus.QUEUED] * len(outside)
    assert (queues["critical"].ready, queues["default"].ready) == (4, 4)
    assert queues["emails"].ready >= 8  # a recurring email job may have joined them
    for name in ("critical", "emails", "default"):
        assert (queues[name].running, queues[name].failed) == (0, 0)
    records = [await handle.record() for handle in inside]
    assert {record.worker for record in records if record is not None} == {"Worker-3-Heavy"}
    assert await worker.stop() == 0, worker.output()
