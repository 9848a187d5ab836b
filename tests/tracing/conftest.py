"""Fixtures for the end-to-end tracing tests: an OTLP receiver and the demo's processes exporting to it.

The API and the workers run as OS processes on a Redis database of these tests' own and the services
tests' throwaway PostgreSQL database, configured from the standard OpenTelemetry environment to export
over OTLP/HTTP to a receiver in this process. Every process is stopped by PID when its test ends, before
the receiver closes, so the spans they flush on the way out still have somewhere to go.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import ManagedProcess, ManagedProcesses, free_port
from tests.redis_databases import FlushedRedis
from tests.services.service_processes import clean_environment
from tests.tracing.otlp_receiver import OtlpReceiver, running_receiver

# Spans leave a process a fifth of a second after they end, rather than the SDK's default 5 s.
SCHEDULE_DELAY_MS = 200
READY_TIMEOUT = 30.0


@dataclass
class TracedStack:
    """The demo's API and workers as processes, each exporting its spans and metrics to `receiver`."""

    processes: ManagedProcesses
    receiver: OtlpReceiver
    redis_url: str
    database_url: str
    api_port: int = 0
    _client: httpx.AsyncClient | None = None

    def environment(self, service_name: str, **variables: str) -> dict[str, str]:
        """Return a process's environment: the test's Redis and database, no simulated work, OTLP export.

        Any ``OTEL_*`` variable of the shell running the tests is dropped; *variables* come last.
        """
        inherited = {
            name: value for name, value in clean_environment().items() if not name.startswith("OTEL_")
        }
        return inherited | {
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "WORK_SCALE": "0",
            "EMAIL_FAILURE_RATE": "0",
            "OTEL_SERVICE_NAME": service_name,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": str(SCHEDULE_DELAY_MS),
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            **variables,
        }

    def start_api(self, **variables: str) -> ManagedProcess:
        """Start ``uvicorn services.api.app:app`` on a free port, as service ``api``."""
        self.api_port = free_port()
        arguments = ["-m", "uvicorn", "services.api.app:app", "--host", "127.0.0.1"]
        return self.processes.start(
            "api", [*arguments, "--port", str(self.api_port)], self.environment("api", **variables)
        )

    def start_worker(self, profile: str, **variables: str) -> ManagedProcess:
        """Start ``python -m services.worker <profile>``, as service ``worker-<profile>``.

        Workers export gzip-compressed (the API does not), so the receiver reads both.
        """
        name = f"worker-{profile}"
        environment = self.environment(name, OTEL_EXPORTER_OTLP_COMPRESSION="gzip", **variables)
        return self.processes.start(name, ["-m", "services.worker", profile], environment)

    @property
    def client(self) -> httpx.AsyncClient:
        """Return the client of the API process (closed with the stack)."""
        assert self.api_port, "start the API first"
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30.0)
        return self._client

    async def aclose(self) -> None:
        """Close the client, then stop every process by PID (SIGTERM, then SIGKILL after a grace)."""
        try:
            if self._client is not None:
                await self._client.aclose()
        finally:
            self.processes.stop_all()

    def _all_running(self) -> None:
        for started in self.processes.started:
            if started.process.poll() is not None:
                raise AssertionError(
                    f"{started.name} exited ({started.process.returncode}):\n{self.processes.logs()}"
                )

    async def ready(self, workers: list[ManagedProcess]) -> None:
        """Wait until the API answers /health with 200 and every one of *workers* is in its worker stats."""
        deadline = time.monotonic() + READY_TIMEOUT
        wanted = {worker.pid for worker in workers}
        last: Any = None
        while True:
            self._all_running()
            try:
                health = await self.client.get("/health")
                if health.status_code == 200:
                    stats = await self.client.get("/api/distributeddemo/worker-stats")
                    last = stats.json()
                    if stats.status_code == 200 and wanted <= {w["pid"] for w in last["workers"]}:
                        return
                else:
                    last = health.text
            except httpx.TransportError as error:  # not listening yet
                last = error
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the stack was not ready within {READY_TIMEOUT}s (last answer: {last!r}):\n"
                    f"{self.processes.logs()}"
                )
            await asyncio.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """Return an OTLP/HTTP receiver listening on a free port of 127.0.0.1 for this test."""
    with running_receiver() as running:
        yield running


@pytest.fixture
async def tracing_redis(flushed_redis: FlushedRedis) -> str:
    """Return the URL of these tests' Redis database, flushed around the test.

    Not the services tests' database: a worker of theirs running meanwhile would take these tests' jobs (and
    export their spans nowhere), and their flush would drop jobs in the middle of a retry.
    """
    return await flushed_redis("tracing")


@pytest.fixture
async def stack(
    tmp_path: Path,
    receiver: OtlpReceiver,
    postgres_url: str,
    tracing_redis: str,
) -> AsyncIterator[TracedStack]:
    """Return a `TracedStack` to start processes on; each is stopped by PID (SIGTERM, then SIGKILL) after."""
    started = TracedStack(ManagedProcesses(tmp_path), receiver, tracing_redis, postgres_url)
    try:
        yield started
    finally:
        await started.aclose()
