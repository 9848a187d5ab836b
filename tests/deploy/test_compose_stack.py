"""The compose stack for real: compose.yaml, unchanged, on this machine's Docker daemon.

The module brings the stack up once (images that cannot be pulled replaced by the stand-ins of
``tests/containers.py``, the collector by the OTLP receiver stand-in, host ports free ones), waits for every
health check, drives it with the original README's curl examples, and tears it down with ``down -v``.
The tests share that stack and run in file order: the README's scheduled cascade, whose emails stay
deferred for minutes, comes last, after the test that waits for the queues to drain.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from tests import containers
from tests.processes import ROOT, free_port
from tests.tracing.otlp_receiver import ReceivedSpan, span_from_json

if (unavailable := containers.unavailable_reason()) is not None:
    pytest.skip(f"containers unavailable: {unavailable}", allow_module_level=True)

T = TypeVar("T")

# One name, so the app image and its build cache are reused run after run (a lock keeps runs apart).
PROJECT = "arq-mediator-test"
WORKERS = {"worker-general": "Worker-1", "worker-balanced": "Worker-2", "worker-heavy": "Worker-3-Heavy"}
HEALTH_CHECKED = ("redis", "postgres", "api", *WORKERS)
BUILD_TIMEOUT = 900.0  # a cold machine installs the services' dependencies into the image
UP_TIMEOUT = 300.0
HEALTHY_TIMEOUT = 180.0
STOP_TIMEOUT = 90.0  # a worker's stop grace period is 30 s
LOAD_TIMEOUT = 240.0
SPANS_TIMEOUT = 60.0
DEMO = "/api/distributeddemo"


def wait_for(fetch: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Return the first result of *fetch* that is not ``None``; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while (found := fetch()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)
    return found


@dataclass
class Stack:
    """The running stack: compose's command line and environment, and where the API and receiver answer."""

    command: list[str]
    environment: dict[str, str]
    api: httpx.Client

    def compose(self, *arguments: str, timeout: float = 120.0) -> str:
        """Run a compose command on the project; return its output, or fail with it and the services' logs."""
        completed = self._run(arguments, timeout)
        if completed.returncode != 0:
            raise AssertionError(
                f"{' '.join(arguments)} failed ({completed.returncode}):\n{completed.stdout}\n{self.logs()}"
            )
        return completed.stdout

    def _run(self, arguments: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, "-p", PROJECT, *arguments],
            cwd=ROOT,
            env=self.environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )

    def logs(self) -> str:
        """Return the last lines of every service's output, for failure messages."""
        return self._run(("logs", "--no-color", "--tail", "40"), 60).stdout

    def container(self, service: str) -> str:
        """Return the id of the service's container (asked of Docker by compose's labels, which is quicker
        than compose's own `ps`)."""
        project = f"label=com.docker.compose.project={PROJECT}"
        named = f"label=com.docker.compose.service={service}"
        found = containers.docker("ps", "--all", "--quiet", "--filter", project, "--filter", named).split()
        assert len(found) == 1, f"{service} has {len(found)} containers: {found}"
        return found[0]

    def state(self, service: str) -> dict[str, Any]:
        """Return the Docker state of the service's container (Status, ExitCode, Health, ...)."""
        state: dict[str, Any] = json.loads(
            containers.docker("inspect", "--format", "{{json .State}}", self.container(service))
        )
        return state

    def received(self) -> list[ReceivedSpan]:
        """Return every span the collector stand-in has received so far."""
        address = containers.docker(
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            self.container("otel-collector"),
        ).split()[0]
        answer = httpx.get(f"http://{address}:4318/received", timeout=10)
        answer.raise_for_status()
        return [span_from_json(fields) for fields in answer.json()["spans"]]

    def stats(self) -> dict[str, Any]:
        """Return the API's worker-stats answer."""
        answer = self.api.get(f"{DEMO}/worker-stats")
        assert answer.status_code == 200, answer.text
        stats: dict[str, Any] = answer.json()
        return stats


def healthy(stack: Stack) -> bool | None:
    """Return True once every health-checked service is healthy and the rest run, else ``None``."""
    for service in HEALTH_CHECKED:
        state = stack.state(service)
        assert state["Status"] in {"running", "created", "restarting"}, f"{service}: {state}\n{stack.logs()}"
        if state.get("Health", {}).get("Status") != "healthy":
            return None
    unchecked = ("otel-collector", "jaeger")
    return all(stack.state(service)["Status"] == "running" for service in unchecked) or None


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Build and start the stack on stand-ins where needed; take it down with its volumes afterwards."""
    environment = (
        dict(os.environ)
        | containers.compose_images(receiver_as_collector=True)
        | {"API_PORT": str(free_port()), "JAEGER_UI_PORT": str(free_port())}
    )
    with containers.machine_lock(PROJECT, containers.LOCK_TIMEOUT):
        api = httpx.Client(base_url=f"http://127.0.0.1:{environment['API_PORT']}", timeout=30)
        running = Stack(containers.compose_command(), environment, api)
        try:
            # A run that was killed may have left its stack behind.
            running.compose("down", "-v", "--remove-orphans", timeout=STOP_TIMEOUT)
            running.compose("build", timeout=BUILD_TIMEOUT)
            running.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT)
            wait_for(lambda: healthy(running), HEALTHY_TIMEOUT, "every service healthy")
            yield running
        finally:
            api.close()
            running.compose("down", "-v", "--remove-orphans", timeout=STOP_TIMEOUT)
            label = f"label=com.docker.compose.project={PROJECT}"
            assert not containers.docker("ps", "--all", "--quiet", "--filter", label).split()
            assert not containers.docker("volume", "ls", "--quiet", "--filter", label).split()


def test_every_service_runs_and_the_checked_ones_are_healthy(stack: Stack) -> None:
    """Redis, PostgreSQL, the API and the three workers pass their health checks; the rest run."""
    assert healthy(stack)
    answer = stack.api.get("/health")
    assert answer.status_code == 200, answer.text


def test_a_worker_stopped_mid_load_drains_with_exit_0_and_no_job_is_lost(stack: Stack) -> None:
    """Under the README's stress test and mixed workload, worker-general stops (exit 0) and starts again;
    every job of the workload succeeds and the queues drain."""
    stress = stack.api.post(f"{DEMO}/stress-test?jobCount=100")
    assert stress.status_code == 200, stress.text
    assert stress.json()["totalJobs"] == 100
    with ThreadPoolExecutor(max_workers=1) as pool:
        mixed = pool.submit(
            stack.api.post, f"{DEMO}/mixed-workload?reportCount=5&userCount=10", timeout=LOAD_TIMEOUT
        )

        def general_busy() -> bool | None:
            workers = stack.stats()["workers"]
            return any(w["name"] == WORKERS["worker-general"] and w["running"] > 0 for w in workers) or None

        wait_for(general_busy, 60, "worker-general running jobs", interval=0.2)
        stack.compose("stop", "worker-general", timeout=STOP_TIMEOUT)
        assert stack.state("worker-general")["ExitCode"] == 0, stack.logs()
        stack.compose("start", "worker-general")
        answer = mixed.result(timeout=LOAD_TIMEOUT)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["succeeded"], body["failed"], body["stillRunning"]) == (15, 0, 0), body

    def drained() -> dict[str, Any] | None:
        totals: dict[str, Any] = stack.stats()["totals"]
        return totals if (totals["ready"], totals["running"], totals["deferred"]) == (0, 0, 0) else None

    wait_for(drained, LOAD_TIMEOUT, "every queue empty, nothing running or deferred")
    wait_for(lambda: healthy(stack), HEALTHY_TIMEOUT, "worker-general healthy again")


def test_one_trace_joins_the_api_request_and_the_jobs_the_workers_ran(stack: Stack) -> None:
    """The collector stand-in gets, in one trace, the API's request span, a PRODUCER span per job and the
    workers' CONSUMER spans under them; every worker exported spans of jobs it ran."""
    answer = stack.api.post(f"{DEMO}/mixed-workload?reportCount=2&userCount=2", timeout=LOAD_TIMEOUT)
    assert answer.status_code == 200, answer.text
    job_ids = {item["jobId"] for item in answer.json()["items"]}

    def joined() -> tuple[list[ReceivedSpan], list[ReceivedSpan]] | None:
        spans = stack.received()
        jobs = [s for s in spans if s.attributes.get("messaging.message.id") in job_ids]
        producers = {s.attributes["messaging.message.id"]: s for s in jobs if s.kind == "SPAN_KIND_PRODUCER"}
        consumers = [s for s in jobs if s.kind == "SPAN_KIND_CONSUMER"]
        if set(producers) != job_ids or {s.attributes["messaging.message.id"] for s in consumers} != job_ids:
            return None
        traces = {span.trace_id for span in jobs}
        requests = [s for s in spans if s.trace_id in traces and s.kind == "SPAN_KIND_SERVER"]
        return (requests, jobs) if requests else None

    requests, job_spans = wait_for(joined, SPANS_TIMEOUT, f"spans of jobs {sorted(job_ids)}")
    assert [(r.service, r.name) for r in requests] == [("api", f"POST {DEMO}/mixed-workload")], requests
    assert {span.trace_id for span in job_spans} == {requests[0].trace_id}
    by_id = {span.span_id: span for span in job_spans}
    for span in job_spans:
        if span.kind == "SPAN_KIND_CONSUMER":
            assert span.service in WORKERS, span.describe()
            assert by_id[span.parent_span_id].kind == "SPAN_KIND_PRODUCER", span.describe()
    consuming = {s.service for s in stack.received() if s.kind == "SPAN_KIND_CONSUMER"}
    assert consuming == set(WORKERS), consuming


def test_the_readme_curl_examples_answer(stack: Stack) -> None:
    """worker-stats lists the three workers with their queues; the scheduled cascade defers five emails
    30 s apart; triggering the recurring jobs enqueues all three."""
    stats = stack.stats()
    assert {worker["name"] for worker in stats["workers"]} >= set(WORKERS.values()), stats
    assert stats["totals"]["capacity"] >= 20 + 15 + 5, stats
    cascade = stack.api.post(f"{DEMO}/scheduled-cascade")
    assert cascade.status_code == 200, cascade.text
    assert (cascade.json()["count"], cascade.json()["intervalSeconds"]) == (5, 30), cascade.text
    triggered = stack.api.post(f"{DEMO}/trigger-all-recurring")
    assert triggered.status_code == 200, triggered.text
    assert len(triggered.json()["triggered"]) == 3, triggered.text
