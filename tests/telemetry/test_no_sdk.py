"""With no OpenTelemetry SDK set up (a fresh process), tracing is off and jobs run as before."""

from __future__ import annotations

import asyncio
import os
import sys

# Runs in a fresh interpreter, so the SDK this test session installed is not there; the message types are
# defined in __main__, where the mediator resolves their annotations like any module's.
ROUND_TRIP = """
import asyncio
import json
import sys

from arq_mediator import Context, Mediator, Request, Worker, WorkerSettings
from tests.keys import job_key
from arq_mediator._telemetry import tracing_enabled


class Double(Request[int]):
    n: int


async def double(request: Double, ctx: Context) -> int:
    return request.n * 2


async def main() -> None:
    assert not tracing_enabled()
    mediator = Mediator(redis=sys.argv[1])
    mediator.handler(queue="no-sdk")(double)
    async with mediator:
        assert await mediator.send(Double(n=2)) == 4
        handle = await mediator.enqueue(Double(n=21))
        envelope = json.loads(await mediator._jobs.redis.get(job_key(handle.id)))
        settings = WorkerSettings(queues=["no-sdk"], heartbeat=0.2, lease=2.0, idle_check=0.2, grace=2.0)
        worker = Worker(mediator, settings)
        running = asyncio.create_task(worker.run())
        try:
            result = await handle.result(timeout=10)
        finally:
            worker.stop()
            await running
    print(json.dumps({
        "result": result,
        "trace": envelope["trace"],
        "succeeded": worker.counters.succeeded,
        "tracing": tracing_enabled(),
        "sdk_imported": "opentelemetry.sdk" in sys.modules,
    }))


asyncio.run(main())
"""


async def test_without_an_sdk_tracing_is_off_and_a_job_round_trip_works(redis_url: str) -> None:
    """In a process with no SDK, `tracing_enabled()` is False, nothing is injected, and a job still runs."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        "-c",
        ROUND_TRIP,
        redis_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()

    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == (
        '{"result": 42, "trace": {}, "succeeded": 1, "tracing": false, "sdk_imported": false}'
    )
