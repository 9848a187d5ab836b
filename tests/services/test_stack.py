"""The local stack, ``python -m services.stack``, started as the README says and driven over HTTP."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from services.embedded_redis import EmbeddedRedisError, find_redis_server

from tests.jobs.waiting import polled
from tests.processes import ManagedProcesses, free_port
from tests.services.service_processes import clean_environment, descendants, kill_if_running, still_running

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[tuple[ManagedProcesses, list[tuple[int, str]]]]:
    """Start stack processes; at the end kill each one's process group and every child it was seen with.

    Skips the test where no redis-server can be found for the embedded Redis.
    """
    try:
        find_redis_server()
    except EmbeddedRedisError as error:
        pytest.skip(str(error))
    started = ManagedProcesses(tmp_path)
    children: list[tuple[int, str]] = []
    try:
        yield started, children
    finally:
        for stack in started.started:
            if stack.process.poll() is None:
                os.killpg(stack.pid, signal.SIGKILL)
        for child in children:  # the embedded Redis runs in a session of its own
            kill_if_running(child)
        started.stop_all()


def quiet(stats: dict[str, Any]) -> bool:
    """Return whether no job is waiting, deferred (a retry) or running on any queue."""
    return all(not (q["ready"] or q["deferred"] or q["running"]) for q in stats["queues"].values())


def finished(stats: dict[str, Any]) -> int:
    """Return the jobs the live workers finished, succeeded or failed for good, by their counters."""
    return sum(worker["succeeded"] + worker["failed"] for worker in stats["workers"])


async def test_the_stack_runs_the_demo_on_embedded_redis_and_sqlite_and_stops_without_orphans(
    stacks: tuple[ManagedProcesses, list[tuple[int, str]]], tmp_path: Path
) -> None:
    """One command starts Redis, the API and three workers; a stress test runs through; SIGTERM stops all."""
    processes, children = stacks
    port = free_port()
    data = tmp_path / "data"
    stack = processes.start(
        "stack",
        ["-m", "services.stack", "--api-port", str(port), "--work-scale", "0", "--data-dir", str(data)],
        clean_environment(),  # no REDIS_URL, no DATABASE_URL: the embedded defaults
        new_session=True,
    )

    output = await stack.printed("Press Ctrl-C to stop everything.", timeout=120.0)
    children += [identity for identity, _ in descendants(stack.pid)]
    commands = sorted(command for _, command in descendants(stack.pid))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
        stress = await client.post("/api/distributeddemo/stress-test?jobCount=100")

        async def stats() -> dict[str, Any]:
            assert stack.process.poll() is None, stack.output()
            body: dict[str, Any] = (await client.get("/api/distributeddemo/worker-stats")).json()
            return body

        # 100 jobs, and a welcome email and an audit record for each of the 10 users created.
        done = await polled(
            stats, lambda s: quiet(s) and finished(s) >= 120, timeout=60.0, interval=0.2, what="120 jobs"
        )
        health = await client.get("/health")
        pages = [
            await client.get(f"/schema/{page}") for page in ("swagger", "scalar", "redoc", "openapi.json")
        ]

    os.kill(stack.pid, signal.SIGTERM)
    returncode = await stack.exited(timeout=60.0)

    for url in ("/schema/swagger", "/schema/scalar", "/api/distributeddemo/worker-stats"):
        assert f"{base}{url}" in output
    assert f'curl -X POST "{base}/api/distributeddemo/stress-test?jobCount=100"' in output
    assert len(commands) == 5, commands
    assert any("redis-server" in command for command in commands), commands
    assert any(f"uvicorn services.api.app:app --host 127.0.0.1 --port {port}" in c for c in commands)
    for profile in ("general", "balanced", "heavy"):
        assert any(command.endswith(f"-m services.worker {profile}") for command in commands), commands
    assert stress.status_code == 200, stress.text
    assert stress.json()["queues"] == {"cleanup": 40, "emails": 25, "reports": 25, "critical": 10}
    assert stress.json()["totalJobs"] == 100
    assert health.status_code == 200
    assert [page.status_code for page in pages] == [200] * 4
    workers = {worker["name"]: worker for worker in done["workers"]}
    assert sorted(workers) == ["Worker-1", "Worker-2", "Worker-3-Heavy"]
    assert workers["Worker-3-Heavy"]["queues"] == ["reports", "cleanup"]
    assert [workers[name]["maxJobs"] for name in sorted(workers)] == [20, 15, 5]
    assert finished(done) >= 120
    assert (data / "demo.sqlite3").is_file()
    assert (data / "redis").is_dir()
    assert returncode == 0, stack.output()
    assert [child for child in children if still_running(child)] == []
    assert "Stopped: api" in stack.output()


WORKER_LINE = re.compile(
    r"^  Worker-1:\s+(?P<url>http://\S+/worker-info) \(pid (?P<pid>\d+)\)$", re.MULTILINE
)


async def test_a_killed_worker_is_started_again_while_the_api_answers_through_tasks_py_demo(
    stacks: tuple[ManagedProcesses, list[tuple[int, str]]], tmp_path: Path
) -> None:
    """`tasks.py demo --api-port P`: kill -9 of Worker-1 leaves the API up, and the worker comes back."""
    processes, children = stacks
    port = free_port()
    arguments = ["tasks.py", "demo", "--api-port", str(port), "--work-scale", "0"]
    stack = processes.start(
        "demo", [*arguments, "--data-dir", str(tmp_path / "data")], clean_environment(), new_session=True
    )
    output = await stack.printed("A worker that crashes is started again.", timeout=120.0)
    children += [identity for identity, _ in descendants(stack.pid)]
    found = WORKER_LINE.search(output)
    assert found is not None, output
    info_url, killed = found["url"], int(found["pid"])
    base = f"http://127.0.0.1:{port}"

    async with httpx.AsyncClient(timeout=10.0) as client:
        before = (await client.get(info_url)).json()
        os.kill(killed, signal.SIGKILL)
        await stack.printed(f"worker-general (pid {killed}) ended unexpectedly (stopped by SIGKILL)")
        while_down = await client.get(f"{base}/health")
        stress = await client.post(f"{base}/api/distributeddemo/stress-test?jobCount=3")
        restarted = await stack.printed("worker-general started again (pid ")
        children += [identity for identity, _ in descendants(stack.pid)]

        async def worker_info() -> dict[str, Any]:
            try:
                body: dict[str, Any] = (await client.get(info_url)).json()
            except httpx.TransportError:  # the new process is not listening yet
                return {"pid": killed}
            return body

        after = await polled(worker_info, lambda body: body["pid"] != killed, timeout=30.0, interval=0.1)

        async def worker_pids() -> dict[str, int]:
            stats = (await client.get(f"{base}/api/distributeddemo/worker-stats")).json()
            return {worker["name"]: worker["pid"] for worker in stats["workers"]}

        pids = await polled(worker_pids, lambda pids: after["pid"] in pids.values(), timeout=30.0)

    os.kill(stack.pid, signal.SIGTERM)
    returncode = await stack.exited(timeout=60.0)

    assert before["pid"] == killed
    assert before["workerName"] == after["workerName"] == "Worker-1"
    assert while_down.status_code == 200
    assert stress.status_code == 200
    assert "starting it again in 1 s (crash 1 in a row)" in restarted
    assert pids["Worker-1"] == after["pid"]
    assert killed not in pids.values()
    printed = stack.output()
    assert f"http://127.0.0.1:{port} (pid " in printed  # the --api-port given to tasks.py
    assert "Redis:          embedded redis-server on redis://127.0.0.1:" in printed
    assert "app data:       SQLite file " in printed
    for name in ("api", "worker-general", "worker-balanced", "worker-heavy"):
        assert re.search(rf"^{name} +\| ", printed, re.MULTILINE), name  # each child's lines, prefixed
    assert "Stopping" in printed
    assert returncode == 0, printed
    assert [child for child in children if still_running(child)] == []
