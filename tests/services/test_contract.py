"""The API keeps its OpenAPI contract: schemathesis against the real API process, a worker, Redis, PostgreSQL.

Schemathesis reads the served document and sends what it allows (and, to check refusals, what it does
not) to every operation, in all its phases, the stateful one following the document's links (create a
user, then read it; queue a report, then read its job). Any finding fails the test: a 5xx, a status code,
content type, header or body the document does not declare, a valid request refused or an invalid one
accepted. Schemathesis's warnings (an operation that mostly answered 429 or 404) are not findings and
do not fail it: which ones appear depends on timing. The run is bounded (examples per operation, a fixed
seed, a job budget that keeps the worker's backlog small): 15 s on two idle cores, about a minute with
the test's processes sharing one core with four busy loops (load 6 to 7).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from services.settings import Settings

from tests.jobs.waiting import polled
from tests.processes import ManagedProcesses, free_port
from tests.services.service_processes import worker_environment

# Examples per operation and phase; the seed makes a run repeatable (CONTRACT_SEED tries another).
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "15"))
SEED = os.environ.get("CONTRACT_SEED", "20261203")
# Jobs per minute the fuzzer may queue: enough to reach every endpoint's logic (a larger stress test gets
# the declared 429), few enough that the worker's backlog never makes a mixed workload wait long behind
# stress-test jobs. At 5,000, a worker starved of CPU drained about 35 jobs/s while the backlog reached
# 3,300 jobs, so a mixed workload queued behind it could wait longer than RESPONSE_SECONDS (one such run
# ended with a failure and an error), and the whole run took 220 s of the 300 it was given. At 1,000 the
# backlog stayed under 250 jobs under the same load.
JOB_BUDGET = "1000"
# Bounds on one fuzzed request, the mixed workload's wait for its jobs included.
RESPONSE_SECONDS = 60
# A guard against a hung run, not a measure of speed.
RUN_SECONDS = 900
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "use_after_free",
    "ensure_resource_availability",
)


async def test_the_api_keeps_its_openapi_contract(
    processes: ManagedProcesses, settings: Settings, tmp_path: Path
) -> None:
    """Every operation, fuzzed in every phase, answers only what the OpenAPI document declares."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = worker_environment(settings, API_JOB_BUDGET=JOB_BUDGET)
    uvicorn = ["-m", "uvicorn", "services.api.app:app", "--host", "127.0.0.1", "--port", str(port)]
    api = processes.start("api", uvicorn, environment)
    worker = processes.start("worker", ["-m", "services.worker", "general"], environment)

    async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:

        async def stats() -> dict[str, Any]:
            for process in (api, worker):
                assert process.process.poll() is None, processes.logs()
            try:
                body: dict[str, Any] = (await client.get("/api/distributeddemo/worker-stats")).json()
            except (httpx.TransportError, ValueError):  # not listening yet
                return {"workers": []}
            return body

        await polled(stats, lambda body: len(body["workers"]) == 1, timeout=60.0, interval=0.1, what="worker")

    schemathesis = Path(sys.executable).parent / "st"
    command = [
        str(schemathesis),
        "run",
        f"{base}/schema/openapi.json",
        f"--checks={','.join(CHECKS)}",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        f"--request-timeout={RESPONSE_SECONDS}",
        f"--max-response-time={RESPONSE_SECONDS}",
        "--no-color",
    ]
    # In a thread: the processes' output files are read by this loop meanwhile, and the run takes a while.
    completed = await asyncio.to_thread(
        subprocess.run,
        command,
        cwd=tmp_path,  # schemathesis keeps its example database and reports in its working folder
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )

    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}\n{processes.logs()[-5000:]}"
    assert "Tested: 11" in completed.stdout, completed.stdout  # every operation was reached
    for process in (api, worker):
        assert process.process.poll() is None, processes.logs()
