"""Job metrics through the OpenTelemetry API: counters by outcome, durations, queue wait, queue depth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from arq_mediator import Backoff, Context, JobFailedError, Mediator, Request, ResultRecord
from arq_mediator._jobs import now_ms
from arq_mediator._telemetry import queue_depths
from tests.keys import result_key

from ..jobs.conftest import BaseProbe, running_worker
from ..jobs.waiting import FAST, eventually
from .conftest import Telemetry, points

DESTINATION = "messaging.destination.name"
OUTCOME = "arq_mediator.job.outcome"


class Fine(Request[int]):
    pass


class Broken(Request[int]):
    pass


class Shaky(Request[int]):
    pass


class Later(Request[int]):
    pass


class Held(Request[int]):
    pass


@dataclass
class Probe(BaseProbe):
    """Per-test state: Shaky's tries, and a gate Held waits at."""

    shaky_tries: int = 0


async def fine(request: Fine, ctx: Context) -> int:
    return 1


async def broken(request: Broken, ctx: Context) -> int:
    raise RuntimeError("broken")


async def shaky(request: Shaky, ctx: Context) -> int:
    probe = ctx.resource(Probe)
    probe.shaky_tries += 1
    if probe.shaky_tries == 1:
        raise ConnectionError("first try fails")
    return probe.shaky_tries


async def later(request: Later, ctx: Context) -> int:
    return 2


async def held(request: Held, ctx: Context) -> int:
    await ctx.resource(Probe).release.wait()
    return 3


QUEUES = ["m-fine", "m-broken", "m-shaky", "m-later", "m-held"]


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(queue="m-fine")(fine)
    mediator.handler(queue="m-broken")(broken)
    mediator.handler(queue="m-shaky", max_tries=2, backoff=Backoff(initial=0.01, jitter=0))(shaky)
    mediator.handler(queue="m-later")(later)
    mediator.handler(queue="m-held")(held)


@pytest.fixture
def depths() -> Iterator[dict[str, int]]:
    """Return the library's queue-depth table, restored to what it held after the test."""
    saved = dict(queue_depths)
    yield queue_depths
    queue_depths.clear()
    queue_depths.update(saved)


def sums(data: Any, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
    """Return the value of each point of counter *name*, keyed by its attributes."""
    return {frozenset(point.attributes.items()): point.value for point in points(data, name)}


def key(**attributes: str) -> frozenset[tuple[str, Any]]:
    """Return the `sums` key of a point with *attributes* (destination=, outcome=)."""
    names = {"destination": DESTINATION, "outcome": OUTCOME}
    return frozenset((names[name], value) for name, value in attributes.items())


def histogram(data: Any, name: str, queue: str) -> Any:
    """Return the one point of histogram *name* for *queue*."""
    [point] = [point for point in points(data, name) if point.attributes == {DESTINATION: queue}]
    return point


async def run_mixed_jobs(mediator: Mediator, telemetry: Telemetry) -> None:
    """Run a job that succeeds, one that fails for good and one that succeeds on its second try."""
    ok = await mediator.enqueue(Fine())
    bad = await mediator.enqueue(Broken())
    retried = await mediator.enqueue(Shaky())
    async with running_worker(mediator, queues=QUEUES, **FAST):
        assert await ok.result(timeout=5) == 1
        with pytest.raises(JobFailedError):
            await bad.result(timeout=5)
        assert await retried.result(timeout=5) == 2
        # A job's metrics are all recorded before its consumer span ends.
        await telemetry.wait_for_spans(4, kind=SpanKind.CONSUMER)


async def test_jobs_enqueued_are_counted_per_queue(mediator: Mediator, telemetry: Telemetry) -> None:
    """arq_mediator.jobs.enqueued counts each job put on a queue, by queue."""
    await mediator.enqueue(Fine())
    await mediator.enqueue(Fine())
    await mediator.enqueue(Broken())

    assert sums(telemetry.collect(), "arq_mediator.jobs.enqueued") == {
        key(destination="m-fine"): 2,
        key(destination="m-broken"): 1,
    }


async def test_jobs_processed_are_counted_by_outcome(mediator: Mediator, telemetry: Telemetry) -> None:
    """arq_mediator.jobs.processed counts each finished try as succeeded, failed or retried, by queue."""
    await run_mixed_jobs(mediator, telemetry)

    assert sums(telemetry.collect(), "arq_mediator.jobs.processed") == {
        key(destination="m-fine", outcome="succeeded"): 1,
        key(destination="m-broken", outcome="failed"): 1,
        key(destination="m-shaky", outcome="retried"): 1,
        key(destination="m-shaky", outcome="succeeded"): 1,
    }


async def test_retries_are_counted(mediator: Mediator, telemetry: Telemetry) -> None:
    """arq_mediator.jobs.retried counts the failed tries that were scheduled for another try."""
    await run_mixed_jobs(mediator, telemetry)

    assert sums(telemetry.collect(), "arq_mediator.jobs.retried") == {key(destination="m-shaky"): 1}


async def test_job_duration_is_a_histogram_per_queue(mediator: Mediator, telemetry: Telemetry) -> None:
    """arq_mediator.job.duration records the time a handler ran, in seconds, by queue."""
    await run_mixed_jobs(mediator, telemetry)

    data = telemetry.collect()
    point = histogram(data, "arq_mediator.job.duration", "m-fine")
    assert point.count == 1
    assert 0 <= point.min <= point.max < 1.0
    assert histogram(data, "arq_mediator.job.duration", "m-shaky").count >= 1


async def test_a_failed_try_records_its_duration(mediator: Mediator, telemetry: Telemetry) -> None:
    """A try that fails still records how long its handler ran."""
    await run_mixed_jobs(mediator, telemetry)

    data = telemetry.collect()
    assert histogram(data, "arq_mediator.job.duration", "m-broken").count == 1
    assert histogram(data, "arq_mediator.job.duration", "m-shaky").count == 2


async def test_queue_wait_is_a_histogram_per_queue_and_try(mediator: Mediator, telemetry: Telemetry) -> None:
    """arq_mediator.job.queue_wait records one wait per try, in seconds, by queue."""
    await run_mixed_jobs(mediator, telemetry)

    data = telemetry.collect()
    for queue, tries in (("m-fine", 1), ("m-broken", 1), ("m-shaky", 2)):
        point = histogram(data, "arq_mediator.job.queue_wait", queue)
        assert point.count == tries
        assert 0 <= point.min <= point.max < 5.0


async def test_a_deferred_jobs_queue_wait_runs_from_its_due_time(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """A job deferred by 0.6 s waits (in the histogram) from when it was due, not from its enqueue."""
    async with running_worker(mediator, queues=["m-later"], **FAST):
        enqueued_at = now_ms()
        handle = await mediator.defer(Later(), by=0.6)
        assert await handle.result(timeout=5) == 2
        await telemetry.wait_for_spans(1, "process m-later", SpanKind.CONSUMER)

    record = await handle.record()
    assert record is not None
    assert record.started_at - enqueued_at >= 600  # it did sit in the queue from enqueue to due time
    point = histogram(telemetry.collect(), "arq_mediator.job.queue_wait", "m-later")
    assert point.count == 1
    assert point.max < 0.3


async def test_a_requeued_jobs_queue_wait_runs_from_the_requeue(
    mediator: Mediator, telemetry: Telemetry, redis_url: str
) -> None:
    """A failed job requeued an hour after it failed waits (in the histogram) from the requeue."""
    handle = await mediator.enqueue(Broken())
    async with running_worker(mediator, queues=["m-broken"], **FAST):
        with pytest.raises(JobFailedError):
            await handle.result(timeout=5)
        await telemetry.wait_for_spans(1, "process m-broken", SpanKind.CONSUMER)
    # Age the kept failure by an hour, as if it had failed then.
    client: Redis = Redis.from_url(redis_url)
    try:
        raw = await client.get(result_key(handle.id))
        assert raw is not None
        record = ResultRecord.model_validate_json(raw)
        assert record.job is not None
        hour = 3_600_000
        aged = record.job.model_copy(
            update={"enqueued_at": record.job.enqueued_at - hour, "due_at": (record.job.due_at or 0) - hour}
        )
        await client.set(result_key(handle.id), record.model_copy(update={"job": aged}).model_dump_json())
    finally:
        await client.aclose()
    telemetry.collect()  # drop the first try's measurements

    requeued = await mediator.requeue(handle.id)
    async with running_worker(mediator, queues=["m-broken"], **FAST):
        with pytest.raises(JobFailedError):
            await requeued.result(timeout=5)
        await telemetry.wait_for_spans(2, "process m-broken", SpanKind.CONSUMER)

    point = histogram(telemetry.collect(), "arq_mediator.job.queue_wait", "m-broken")
    assert point.count == 1
    assert point.max < 60


async def test_the_queue_depth_gauge_reads_the_depth_table(
    telemetry: Telemetry, depths: dict[str, int]
) -> None:
    """arq_mediator.queue.depth reports each queue's depth from `_telemetry.queue_depths` when collected."""
    depths["m-deep"] = 7
    depths["m-shallow"] = 0

    found = {
        point.attributes[DESTINATION]: point.value
        for point in points(telemetry.collect(), "arq_mediator.queue.depth")
        if point.attributes[DESTINATION] in ("m-deep", "m-shallow")
    }
    assert found == {"m-deep": 7, "m-shallow": 0}

    depths["m-deep"] = 2
    [point] = [
        point
        for point in points(telemetry.collect(), "arq_mediator.queue.depth")
        if point.attributes[DESTINATION] == "m-deep"
    ]
    assert point.value == 2


async def test_a_running_worker_reports_the_depth_of_its_queues(
    mediator: Mediator, probe: Probe, telemetry: Telemetry, depths: dict[str, int]
) -> None:
    """A worker's heartbeat fills the depth table, so the gauge shows jobs ready or running on its queue."""
    handles = [await mediator.enqueue(Held()) for _ in range(3)]
    async with running_worker(mediator, queues=["m-held"], max_jobs=1, **FAST):
        try:
            await eventually(lambda: depths.get("m-held", 0) > 0, 1.5, what="a depth for m-held")
            [point] = [
                point
                for point in points(telemetry.collect(), "arq_mediator.queue.depth")
                if point.attributes[DESTINATION] == "m-held"
            ]
            assert point.value == 3
        finally:
            probe.release.set()
        for handle in handles:
            assert await handle.result(timeout=5) == 3
