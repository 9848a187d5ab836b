"""Outcome writes when Redis is gone for good: a stopping worker gives up after its grace, loudly."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import SlotNotCoveredError

import arq_mediator
from arq_mediator import (
    JobAbortedError,
    JobFailedError,
    Mediator,
    NoHandlerError,
    ResultRecord,
    WorkerLostError,
    WorkerSettings,
)
from arq_mediator._claims import Claim
from arq_mediator._errors import REDIS_UNAVAILABLE
from arq_mediator._jobs import JobClient
from arq_mediator._layout import Layout
from arq_mediator._outcomes import NOT_HELD, Outcomes
from arq_mediator._worker import Worker


def a_claim() -> Claim:
    return Claim(
        id="job-1",
        key_id=b"job-1",
        queue="default",
        token="worker.1",
        deliveries=1,
        due_at=0,
        claimed_at=0,
        body=b"{}",
    )


async def test_outcomes_redis_never_takes_are_given_up_once_the_grace_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With Redis unreachable and the worker past its grace, each write gives up and says so."""
    unreachable: Redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    outcomes = Outcomes(JobClient(unreachable), "w1", lease=2.0, give_up_after=lambda: True)
    claim = a_claim()
    record = ResultRecord(id=claim.id, queue=claim.queue, ok=True)
    with caplog.at_level(logging.ERROR, logger="arq_mediator.worker"):
        assert await outcomes.complete(claim, record, 60.0, failed=False) is False
        assert await outcomes.retry(a_claim(), "{}", 0) == NOT_HELD
        assert await outcomes.release(a_claim()) == NOT_HELD
        await outcomes.flush()
    messages = [record.getMessage() for record in caplog.records]
    assert any("could not record job outcomes before stopping" in message for message in messages)
    assert any("could not record the outcome of job job-1" in message for message in messages)
    await unreachable.aclose()


async def test_a_handed_in_outcome_frees_its_slot_before_it_is_written() -> None:
    """Handing in a result or a retry calls on_settling at once, while the write has yet to reach Redis."""
    unreachable: Redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    settling: list[bool] = []
    claim, retried = a_claim(), a_claim()
    outcomes = Outcomes(
        JobClient(unreachable),
        "w1",
        lease=2.0,
        give_up_after=lambda: True,
        on_settling=lambda settled: settling.append(settled.settling),
    )
    record = ResultRecord(id=claim.id, queue=claim.queue, ok=True)
    assert await outcomes.complete(claim, record, 60.0, failed=False) is False
    assert await outcomes.retry(retried, "{}", 0) == NOT_HELD
    assert settling == [True, True]
    await outcomes.flush()
    await unreachable.aclose()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("JobFailed", JobFailedError),
        ("JobNotFound", arq_mediator.JobNotFoundError),
        ("JobAborted", JobAbortedError),
        ("WorkerLost", WorkerLostError),
        ("HandlerNotFound", NoHandlerError),
    ],
)
def test_names_before_1_0_still_resolve_with_a_deprecation_warning(old: str, new: type) -> None:
    """Each renamed exception is still importable under its old name, with a warning naming the new one."""
    with pytest.warns(DeprecationWarning, match=f"use {new.__name__}"):
        assert getattr(arq_mediator, old) is new


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    """Only the renamed names resolve; anything else is an AttributeError as usual."""
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        arq_mediator.NoSuchThing  # noqa: B018


async def test_settling_jobs_free_at_most_max_jobs_slots() -> None:
    """While outcome writes keep failing, settling jobs pile up: the worker holds at most 2 x max_jobs."""
    worker = Worker(Mediator(redis="redis://127.0.0.1:1/0"), WorkerSettings(queues=["default"], max_jobs=3))

    async def never_done() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(never_done())
    held = 0
    while worker._free_slots() > 0:  # claim whenever a slot is free; no job's outcome ever lands
        claim = a_claim()
        claim.id = f"job-{held}"
        worker._running[claim.id] = (claim, task)
        claim.settling = True  # as Outcomes does when the handler hands its outcome in
        worker._slot_freed(claim)
        held += 1
        assert held <= 6
    assert worker.running == 6
    worker._forget("job-0")
    worker._running["job-0"] = (a_claim(), task)  # one of them still running its handler: still no room
    assert worker._free_slots() == 0
    task.cancel()


async def test_a_cluster_without_the_slot_is_retried_like_any_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SlotNotCoveredError is no RedisError: the write is still tried again, and lands once it can."""
    client = JobClient(Redis.from_url("redis://127.0.0.1:1/0"))
    failures = [SlotNotCoveredError("no node serves the slot")]

    async def complete_many(batch: list[list[Any]]) -> list[bool]:
        if failures:
            raise failures.pop()
        return [True] * len(batch)

    monkeypatch.setattr(client, "complete_many", complete_many)
    outcomes = Outcomes(client, "w1", lease=2.0, give_up_after=lambda: False)
    claim = a_claim()
    record = ResultRecord(id=claim.id, queue=claim.queue, ok=True)
    assert await outcomes.complete(claim, record, 60.0, failed=False) is True
    assert failures == []
    await client.redis.aclose()


async def test_a_batch_retries_only_the_queues_whose_write_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cluster one queue's node down fails its part only: the healthy part is kept, not sent again."""
    client = JobClient(Redis.from_url("redis://127.0.0.1:1/0"))
    per_queue = client._complete_per_queue
    written: list[str] = []
    failures = [RedisConnectionError("the node of queue down is gone")]

    async def complete_many(batch: list[list[Any]]) -> list[bool]:
        queues = {str(job[3]) for job in batch}
        if len(queues) > 1:  # as on a cluster: one call per queue
            return await per_queue(batch)
        if queues == {"down"} and failures:
            raise failures.pop()
        written.extend(queues)
        return [True] * len(batch)

    monkeypatch.setattr(client, "complete_many", complete_many)
    outcomes = Outcomes(client, "w1", lease=2.0, give_up_after=lambda: False)
    claims = [replace(a_claim(), id=queue, queue=queue) for queue in ("up", "down")]
    recorded = await asyncio.gather(
        *(
            outcomes.complete(
                claim, ResultRecord(id=claim.id, queue=claim.queue, ok=True), 60.0, failed=False
            )
            for claim in claims
        )
    )
    assert recorded == [True, True]
    assert sorted(written) == ["down", "up"]  # "up" written once, not re-sent with the retry
    assert outcomes.dropped == 0
    await client.redis.aclose()


async def test_writes_to_one_shared_key_before_an_enqueue_or_a_beat_are_best_effort(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a cluster, the node of the queue registry (or the types list) down: warned once, False (tried
    next time). On one server the same error is raised: the enqueue or beat would fail on it anyway.
    """
    unreachable: Redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    client = JobClient(unreachable)
    one_server: Any = unreachable.sadd("arqm:queues", "q")
    with pytest.raises(REDIS_UNAVAILABLE):
        await client._best_effort("register queues", one_server)
    client.layout = Layout(cluster=True)
    with caplog.at_level(logging.DEBUG, logger="arq_mediator.jobs"):
        for _ in range(2):
            registering: Any = unreachable.sadd("arqm:queues", "q")
            assert await client._best_effort("register queues", registering) is False
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "could not register queues" in warnings[0]
    await unreachable.aclose()


async def test_closing_the_client_stops_a_best_effort_write_still_tried_in_the_background() -> None:
    """A shared-key write retried in the background while its node hangs must not outlive the client."""
    hung: Redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    client = JobClient(hung)
    client.layout = Layout(cluster=True)
    client._unavailable_for.add("register queues")  # an earlier try failed: this one goes to the background
    started = asyncio.Event()

    async def never_answers() -> None:
        started.set()
        await asyncio.Event().wait()

    assert await client._best_effort("register queues", never_answers()) is False
    retry = client._retrying["register queues"]
    async with asyncio.timeout(5):
        await started.wait()
    assert not retry.done()
    await client.close()
    assert retry.cancelled()
    assert not client._retrying
    await hung.aclose()
