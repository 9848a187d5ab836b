"""What the testing helper promises in both modes: jobs run as a worker runs them, in memory or on Redis."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any, assert_type

import pytest
from pydantic import BaseModel

from arq_mediator import (
    CallNext,
    Context,
    JobAbortedError,
    JobFailedError,
    JobHandle,
    JobStatus,
    Notification,
    Request,
)

from .conftest import Jobs


class Receipt(BaseModel):
    cents: int
    day: date


class Charge(Request[Receipt]):
    cents: int
    day: date


class Flaky(Request[int]):
    failures: int


class Refuse(Request[None]):
    reason: str


class Hang(Request[None]):
    pass


class Paid(Notification):
    cents: int


class Greet(Request[str]):
    name: str


class PaymentDeclinedError(Exception):
    """A failure worth no retry."""


async def test_a_job_runs_through_json_and_returns_its_typed_result(jobs: Jobs) -> None:
    """The handler gets the request back from JSON (a date stays a date) and result() is typed."""
    seen: list[Charge] = []
    request = Charge(cents=250, day=date(2026, 12, 1))

    @jobs.mediator.handler(queue="critical")
    async def charge(request: Charge, ctx: Context) -> Receipt:
        seen.append(request)
        return Receipt(cents=request.cents, day=request.day)

    await jobs.start()
    job = assert_type(await jobs.mediator.enqueue(request), JobHandle[Receipt])
    await jobs.drain()
    assert assert_type(await job.result(timeout=5), Receipt) == Receipt(cents=250, day=date(2026, 12, 1))
    assert seen == [request]
    assert seen[0] is not request  # decoded from the envelope, not handed over
    record = await job.record()
    assert record is not None
    assert (record.ok, record.queue, record.try_number) == (True, "critical", 1)


async def test_retries_follow_the_handlers_policy(jobs: Jobs) -> None:
    """A job failing with a retryable error is tried again, up to max_tries, and then succeeds."""
    tries: list[int] = []

    @jobs.mediator.handler(max_tries=3, retry_on=(ConnectionError,))
    async def flaky(request: Flaky, ctx: Context) -> int:
        assert ctx.job is not None
        tries.append(ctx.job.try_number)
        if len(tries) <= request.failures:
            raise ConnectionError("try again")
        return len(tries)

    await jobs.start()
    job = await jobs.mediator.enqueue(Flaky(failures=2))
    await jobs.drain()
    assert await job.result(timeout=5) == 3
    assert tries == [1, 2, 3]


async def test_an_error_outside_retry_on_fails_at_once_and_can_be_requeued(jobs: Jobs) -> None:
    """An exception not in retry_on fails the job on its first try; it is listed and can be requeued."""
    tries: list[int] = []

    @jobs.mediator.handler(max_tries=5, retry_on=(ConnectionError,))
    async def refuse(request: Refuse, ctx: Context) -> None:
        tries.append(1)
        raise PaymentDeclinedError(request.reason)

    await jobs.start()
    job = await jobs.mediator.enqueue(Refuse(reason="card declined"))
    await jobs.drain()
    with pytest.raises(JobFailedError) as failed:
        await job.result(timeout=5)
    assert failed.value.remote_type.endswith("PaymentDeclinedError")
    assert failed.value.remote_message == "card declined"
    assert await job.status() is JobStatus.FAILED
    assert [record.id for record in await jobs.mediator.failed_jobs("default")] == [job.id]
    assert (await jobs.mediator.stats()).totals["failed"] == 1

    requeued = await jobs.mediator.requeue(job.id)
    assert requeued.enqueued
    await jobs.drain()
    assert len(tries) == 2
    assert await jobs.mediator.failed_jobs("default") == [await job.record()]


async def test_retries_use_up_max_tries_whatever_the_retry_delay(jobs: Jobs) -> None:
    """With the backoff shortened, a job that always fails still gets exactly max_tries tries."""
    tries: list[int] = []

    @jobs.mediator.handler(max_tries=3)
    async def refuse(request: Refuse) -> None:
        tries.append(1)
        raise RuntimeError(request.reason)

    await jobs.start(retry_delay=0.01)
    job = await jobs.mediator.enqueue(Refuse(reason="always"))
    await jobs.drain()
    with pytest.raises(JobFailedError, match="always"):
        await job.result(timeout=5)
    assert len(tries) == 3
    record = await job.record()
    assert record is not None
    assert record.try_number == 3


async def test_a_try_over_its_timeout_fails_the_job(jobs: Jobs) -> None:
    """A handler's timeout cancels the try and fails the job with a TimeoutError, as in a worker."""

    @jobs.mediator.handler(timeout=0.05)
    async def hang(request: Hang) -> None:
        await asyncio.Event().wait()

    await jobs.start()
    job = await jobs.mediator.enqueue(Hang())
    await jobs.drain()
    with pytest.raises(JobFailedError) as failed:
        await job.result(timeout=5)
    assert failed.value.remote_type == "builtins.TimeoutError"


async def test_aborting_a_queued_job_removes_it(jobs: Jobs) -> None:
    """A job aborted before it ran never runs; its result raises JobAbortedError."""
    ran: list[str] = []

    @jobs.mediator.handler
    async def greet(request: Greet) -> str:
        ran.append(request.name)
        return request.name

    if jobs.mode == "local":  # a local queue runs nothing until drained
        await jobs.start()
    job = await jobs.mediator.enqueue(Greet(name="never"))
    assert await job.abort()
    if jobs.mode == "redis":  # started only now, so it cannot take the job before the abort
        await jobs.start()
    await jobs.drain()
    assert await job.status() is JobStatus.ABORTED
    with pytest.raises(JobAbortedError, match="aborted before it started"):
        await job.result(timeout=5)
    assert ran == []


async def test_aborting_a_running_job_cancels_it(jobs: Jobs) -> None:
    """A job aborted while it runs is cancelled and recorded as aborted."""
    started = asyncio.Event()

    @jobs.mediator.handler
    async def hang(request: Hang) -> None:
        started.set()
        await asyncio.Event().wait()

    await jobs.start()
    job = await jobs.mediator.enqueue(Hang())
    draining = asyncio.create_task(jobs.drain())
    async with asyncio.timeout(5):
        await started.wait()
    assert await job.abort()
    await draining
    with pytest.raises(JobAbortedError, match="aborted while running"):
        await job.result(timeout=5)


async def test_enqueue_publish_runs_every_handler_on_its_queue(jobs: Jobs) -> None:
    """A notification enqueued with enqueue_publish becomes one job per handler, each on its queue."""
    heard: list[tuple[str, int]] = []

    @jobs.mediator.handler(queue="emails")
    async def email(event: Paid, ctx: Context) -> None:
        assert ctx.job is not None
        heard.append((ctx.job.queue, event.cents))

    @jobs.mediator.handler(queue="critical")
    async def ledger(event: Paid, ctx: Context) -> None:
        assert ctx.job is not None
        heard.append((ctx.job.queue, event.cents))

    await jobs.start()
    handles = await jobs.mediator.enqueue_publish(Paid(cents=5), job_id="paid-1")
    await jobs.drain()
    assert sorted(heard) == [("critical", 5), ("emails", 5)]
    assert sorted(handle.queue or "" for handle in handles) == ["critical", "emails"]
    for handle in handles:
        assert await handle.status() is JobStatus.SUCCEEDED


async def test_a_behaviour_sees_the_job_it_wraps(jobs: Jobs) -> None:
    """A behaviour taking the context sees the job's id and try, around each try."""
    seen: list[tuple[str, int]] = []

    @jobs.mediator.behavior
    async def log_job(request: Any, call_next: CallNext, ctx: Context) -> Any:
        assert ctx.job is not None
        seen.append((ctx.job.id, ctx.job.try_number))
        return await call_next(request)

    @jobs.mediator.handler(max_tries=2)
    async def flaky(request: Flaky, ctx: Context) -> int:
        if len(seen) <= request.failures:
            raise ConnectionError("once more")
        return len(seen)

    await jobs.start()
    job = await jobs.mediator.enqueue(Flaky(failures=1), job_id="flaky-1")
    await jobs.drain()
    assert await job.result(timeout=5) == 2
    assert seen == [("flaky-1", 1), ("flaky-1", 2)]


async def test_a_deferred_job_runs_when_its_time_comes(jobs: Jobs) -> None:
    """A deferred job waits, reported as deferred, and runs once its delay passed."""

    @jobs.mediator.handler
    async def greet(request: Greet) -> str:
        return f"hello {request.name}"

    await jobs.start()
    job = await jobs.mediator.defer(Greet(name="later"), by=0.3)
    assert await job.status() is JobStatus.DEFERRED
    await jobs.drain()
    assert await job.result(timeout=5) == "hello later"


async def test_a_value_json_cannot_carry_fails_the_job_as_in_production(jobs: Jobs) -> None:
    """A handler returning what its request does not promise passes inline but fails as a job."""

    @jobs.mediator.handler
    async def greet(request: Greet) -> str:
        wrong: Any = {"not": "a string"}
        return wrong  # type: ignore[no-any-return]

    await jobs.start()
    inline: Any = await jobs.mediator.send(Greet(name="inline"))
    assert inline == {"not": "a string"}
    job = await jobs.mediator.enqueue(Greet(name="queued"))
    await jobs.drain()
    with pytest.raises(JobFailedError, match="PydanticSerializationError"):
        await job.result(timeout=5)


async def test_enqueue_many_and_idempotent_ids(jobs: Jobs) -> None:
    """A batch runs every job; enqueueing a job id again returns the existing job without running it."""
    names: list[str] = []

    @jobs.mediator.handler
    async def greet(request: Greet) -> str:
        names.append(request.name)
        return request.name

    await jobs.start()
    handles = await jobs.mediator.enqueue_many([Greet(name="a"), Greet(name="b")], job_ids=["a", None])
    await jobs.drain()
    again = await jobs.mediator.enqueue(Greet(name="a"), job_id="a")
    await jobs.drain()
    assert not again.enqueued
    assert [await handle.result(timeout=5) for handle in handles] == ["a", "b"]
    assert sorted(names) == ["a", "b"]
