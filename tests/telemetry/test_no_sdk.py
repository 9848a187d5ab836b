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

from opentelemetry import propagate, trace

from arq_mediator import Context, Mediator, Request, Worker, WorkerSettings
from tests.keys import job_key
from arq_mediator._telemetry import tracing_enabled

# A caller's trace, as a process with an SDK upstream would have sent it.
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
UPSTREAM = {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"}


class Double(Request[int]):
    n: int


# Enqueues a Double from inside a job, on a queue no worker serves (it stays to be read); returns its id.
class Relay(Request[str]):
    pass


async def double(request: Double, ctx: Context) -> int:
    return request.n * 2


async def relay(request: Relay, ctx: Context) -> str:
    return (await ctx.mediator.enqueue(Double(n=1), queue="parked")).id


async def main() -> None:
    assert not tracing_enabled()
    mediator = Mediator(redis=sys.argv[1])
    mediator.handler(queue="no-sdk")(double)
    mediator.handler(queue="no-sdk")(relay)
    async with mediator:
        assert await mediator.send(Double(n=2)) == 4
        handle = await mediator.enqueue(Double(n=21))
        envelope = json.loads(await mediator._jobs.redis.get(job_key(handle.id)))
        # Without an SDK a job's trace still goes on from the caller's trace to the jobs it enqueues.
        with trace.use_span(trace.get_current_span(propagate.extract(UPSTREAM))):
            relayed = await mediator.enqueue(Relay())
        settings = WorkerSettings(queues=["no-sdk"], heartbeat=0.2, lease=2.0, idle_check=0.2, grace=2.0)
        worker = Worker(mediator, settings)
        running = asyncio.create_task(worker.run())
        try:
            result = await handle.result(timeout=10)
            child = await relayed.result(timeout=10)
            child_trace = json.loads(await mediator._jobs.redis.get(job_key(child))).get("trace", {})
        finally:
            worker.stop()
            await running
    print(json.dumps({
        "result": result,
        "trace": envelope.get("trace", {}),  # none injected: left out of the envelope
        "child_continues_the_trace": TRACE_ID in child_trace.get("traceparent", ""),
        "succeeded": worker.counters.succeeded,
        "tracing": tracing_enabled(),
        "sdk_imported": "opentelemetry.sdk" in sys.modules,
    }))


asyncio.run(main())
"""


async def test_without_an_sdk_tracing_is_off_and_a_job_round_trip_works(redis_url: str) -> None:
    """In a process with no SDK, `tracing_enabled()` is False, nothing is injected, and a job still runs.

    A job that carries a caller's trace context passes it on to the jobs its handler enqueues, even though
    no span is recorded here (a job without one runs with no span at all).
    """
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
        '{"result": 42, "trace": {}, "child_continues_the_trace": true, "succeeded": 2, "tracing": false, '
        '"sdk_imported": false}'
    )
