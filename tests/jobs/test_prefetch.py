"""The worker's prefetch: first-queue jobs claimed ahead of free slots, held under leases, given back whole.

Most tests fix the buffer's size (`fixed_size`) to test what a buffered job goes through; the sizing
itself is tested on `Prefetch` alone and with fast and slow jobs on a real worker.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import pytest
from redis.asyncio import Redis

from arq_mediator import Context, JobFailedError, JobStatus, Mediator, Request, Worker, WorkerSettings
from arq_mediator._claims import Claim, ClaimReply, claim_per_queue
from arq_mediator._prefetch import HEADROOM, RECHECK, Prefetch
from tests.keys import deliveries_key, lease_key, running_key

from .conftest import BaseProbe, running_worker
from .waiting import FAST, eventually


class Gated(Request[str]):
    """Record the start, then wait for the gate *gate* to open ("" for none); answer *tag*."""

    tag: str
    gate: str = ""


class Urgent(Gated):
    """A `Gated` job on the ``high`` queue."""


@dataclass
class Probe(BaseProbe):
    """Which jobs started where, in order, and the gates they wait on."""

    starts: list[str] = field(default_factory=list)
    ran_by: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    gates: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))


async def gated(request: Gated, ctx: Context) -> str:
    probe = ctx.resource(Probe)
    assert ctx.job is not None
    probe.starts.append(request.tag)
    probe.ran_by[request.tag].append(ctx.job.worker)
    if request.gate:
        await probe.gates[request.gate].wait()
    return request.tag


async def urgent(request: Urgent, ctx: Context) -> str:
    return await gated(request, ctx)


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(gated)
    mediator.handler(queue="high")(urgent)


def fixed_size(monkeypatch: pytest.MonkeyPatch, worker: Worker, size: int) -> None:
    """Make *worker*'s buffer hold *size* jobs whatever its pace (the sizing has tests of its own)."""
    monkeypatch.setattr(worker._prefetch, "target", lambda now: size)


def a_claim(job_id: str) -> Claim:
    return Claim(job_id, job_id.encode(), "default", "w.1", 1, 0, 0, b"{}")


# The buffer's size, from its measures alone.


def test_the_buffer_covers_one_claims_latency_at_the_completion_rate() -> None:
    """1,000 jobs/s and claims of 4 ms: about 4 jobs finish per claim, and the buffer holds HEADROOM x 4."""
    prefetch = Prefetch(limit=100)
    for n in range(64):
        prefetch.finished(n / 1000)
    prefetch.claimed(0.004)
    assert prefetch.rate(0.064) == pytest.approx(1000)
    assert prefetch.target(0.064) == int(1000 * 0.004 * HEADROOM)
    assert Prefetch(limit=3).target(0.0) == 0  # nothing finished yet: nothing to go by, nothing held


def test_the_buffer_is_capped_and_zero_turns_it_off() -> None:
    capped, off = Prefetch(limit=3), Prefetch(limit=0)
    for prefetch in (capped, off):
        for n in range(64):
            prefetch.finished(n / 10_000)
        prefetch.claimed(0.01)
    assert (capped.target(0.0064), off.target(0.0064)) == (3, 0)


def test_slow_jobs_and_a_pause_bring_the_buffer_to_nothing() -> None:
    """Jobs of seconds finish too rarely to cover a claim; fast ones that stop finishing soon read alike."""
    slow = Prefetch(limit=8)
    for n in range(20):
        slow.finished(n * 0.5)  # 20 slots of 10 s jobs: 2 jobs/s
    slow.claimed(0.005)
    assert slow.target(10.0) == 0

    stalled = Prefetch(limit=8)
    for n in range(64):
        stalled.finished(n / 2000)
    stalled.claimed(0.004)
    assert stalled.target(0.032) == 8
    assert stalled.target(1.0) == 0  # no job finished for a second: the rate read then is 64/s


def test_a_refill_of_its_own_waits_until_the_buffer_is_half_empty() -> None:
    """A claim for free slots tops the buffer up; a claim for the buffer alone goes out for half of it."""
    prefetch = Prefetch(limit=8)
    for n in range(64):
        prefetch.finished(n / 10_000)
    prefetch.claimed(0.01)
    for job_id in "abcde":
        prefetch.add(a_claim(job_id), 0.0)
    now = 0.0064
    assert (prefetch.wanted(now, claiming=False), prefetch.wanted(now, claiming=True)) == (0, 3)
    prefetch.next()
    assert prefetch.wanted(now, claiming=False) == 4


def test_the_surplus_is_the_jobs_claimed_last_once_the_first_waited() -> None:
    """While jobs keep leaving the buffer it is not cut, whatever its size reads between two finishes."""
    prefetch = Prefetch(limit=8)
    for job_id in "abcd":
        prefetch.add(a_claim(job_id), 1.0)
    assert prefetch.surplus(1.0 + RECHECK / 2) == []
    assert [claim.id for claim in prefetch.surplus(1.0 + RECHECK)] == ["d", "c", "b", "a"]  # target 0
    assert len(prefetch) == 0


# A worker's buffer, on real Redis.


async def test_a_freed_slot_starts_a_prefetched_job_without_waiting_for_a_claim(
    mediator: Mediator, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its claims held up, a worker still starts its buffered jobs one after another as slots free."""
    async with running_worker(mediator, name="w", max_jobs=1, **FAST) as worker:
        fixed_size(monkeypatch, worker, 2)
        handles = [await mediator.enqueue(Gated(tag=tag, gate=tag)) for tag in "abc"]
        await eventually(lambda: probe.starts == ["a"] and worker.prefetched == 2, what="a runs, b, c wait")

        answer = asyncio.Event()
        held_up: list[int] = []

        async def claim_held_up(free: int, ahead: int) -> ClaimReply:
            held_up.append(ahead)
            await answer.wait()
            return ClaimReply(now=0, next_due=-1, bad_queues=[], claims=[])

        monkeypatch.setattr(worker, "_claim", claim_held_up)
        probe.gates["a"].set()
        await eventually(lambda: probe.starts == ["a", "b"], what="b to start after a")
        probe.gates["b"].set()
        await eventually(lambda: probe.starts == ["a", "b", "c"], what="c to start after b")
        assert held_up  # the claim loop went to refill the buffer, and has had no answer since
        probe.gates["c"].set()
        assert [await handle.result(timeout=5) for handle in handles] == ["a", "b", "c"]
        answer.set()


async def test_fast_jobs_fill_the_buffer(mediator: Mediator, probe: Probe) -> None:
    """Draining a backlog of jobs that take no time, the worker claims ahead of its free slots."""
    await mediator.enqueue_many([Gated(tag=str(n)) for n in range(2000)])
    async with running_worker(mediator, name="w", max_jobs=4, **FAST) as worker:
        await eventually(lambda: worker.prefetched > 0, timeout=20, interval=0, what="a job in the buffer")
        assert worker.running <= 2 * 4  # the buffer is beside the slots: max_jobs still bounds what runs


async def test_slow_jobs_are_not_held_back_from_an_idle_worker(mediator: Mediator, probe: Probe) -> None:
    """After a run of fast jobs, a worker whose slots fill with slow ones gives back the slow jobs it
    buffered while the fast ones finished, and an idle worker takes them."""
    await mediator.enqueue_many([Gated(tag=f"fast-{n}") for n in range(1000)])
    async with running_worker(mediator, name="busy", max_jobs=2, **FAST) as busy:
        # Enqueued once the fast jobs drain, so they queue behind them all (one batch shares one score).
        await eventually(lambda: len(probe.starts) > 50, timeout=10, what="busy to take fast jobs")
        await mediator.enqueue_many([Gated(tag=f"slow-{n}", gate="slow") for n in range(6)])
        slow = {f"slow-{n}" for n in range(6)}

        def busy_runs_two_slow_jobs() -> bool:
            return sum(probe.ran_by[tag] == ["busy"] for tag in slow) == 2

        await eventually(busy_runs_two_slow_jobs, timeout=20, what="busy to reach the slow jobs")
        async with running_worker(mediator, name="idle", max_jobs=8, **FAST):
            await eventually(lambda: slow <= set(probe.starts), timeout=5, what="every slow job to start")
            assert busy.prefetched == 0
            assert sum(probe.ran_by[tag] == ["idle"] for tag in slow) == 4
            probe.gates["slow"].set()


async def test_only_the_first_queue_is_claimed_ahead(mediator: Mediator, redis: Redis) -> None:
    """The later queues fill free slots only: a claim asking for 2 and 3 ahead gets 1 + 1, never more."""
    await mediator.enqueue(Urgent(tag="u"))
    await mediator.enqueue_many([Gated(tag=str(n)) for n in range(5)])
    worker = Worker(mediator, WorkerSettings(queues=["high", "default"]))
    reply = await worker._claim_from(["high", "default"], 2, 3, token="t.1")
    assert [claim.queue for claim in reply.claims] == ["high", "default"]
    await mediator.enqueue_many([Urgent(tag=f"u{n}") for n in range(5)])
    reply = await worker._claim_from(["high", "default"], 2, 3, token="t.2")
    assert [claim.queue for claim in reply.claims] == ["high"] * 5
    assert await redis.zcard(running_key("default")) == 1


@pytest.mark.parametrize(("high_has", "asked"), [(1, [("high", 2, 3), ("low", 1, 0)]), (4, [("high", 2, 3)])])
async def test_on_a_cluster_only_the_first_queues_call_claims_ahead(
    high_has: int, asked: list[tuple[str, int, int]]
) -> None:
    """A cluster claims per queue (each its own slot): the prefetch goes with the first queue's call only."""
    calls: list[tuple[str, int, int]] = []

    async def claim_from(queues: Sequence[str], free: int, ahead: int) -> ClaimReply:
        calls.append((queues[0], free, ahead))
        has = high_has if queues[0] == "high" else 9
        claims = [a_claim(f"{queues[0]}-{n}") for n in range(min(has, free + ahead))]
        return ClaimReply(now=1, next_due=-1, bad_queues=[], claims=claims)

    reply = await claim_per_queue(claim_from, ["high", "low"], 2, 3, set(), "w")
    assert calls == asked
    assert len(reply.claims) == max(high_has, 2)


async def test_a_higher_queue_job_runs_before_lower_queue_jobs_waiting_for_a_slot(
    mediator: Mediator, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lower-queue jobs are never buffered, so an urgent job that arrives while they wait runs next."""
    await mediator.enqueue_many([Gated(tag=f"low-{n}", gate="low") for n in range(4)])
    async with running_worker(mediator, name="w", queues=["high", "default"], max_jobs=1, **FAST) as worker:
        fixed_size(monkeypatch, worker, 3)
        await eventually(lambda: len(probe.starts) == 1, what="a low job to run")
        assert worker.prefetched == 0
        await mediator.enqueue(Urgent(tag="urgent", gate="urgent"))
        await eventually(lambda: worker.prefetched == 1, what="the urgent job in the buffer")
        probe.gates["low"].set()
        await eventually(lambda: len(probe.starts) >= 2, what="the next job to start")
        assert probe.starts[1] == "urgent"
        probe.gates["urgent"].set()
        await eventually(lambda: len(probe.starts) == 5, what="every job to run")


async def test_an_aborted_prefetched_job_ends_aborted_without_running(
    mediator: Mediator, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_worker(mediator, name="w", max_jobs=1, **FAST) as worker:
        fixed_size(monkeypatch, worker, 1)
        first = await mediator.enqueue(Gated(tag="first", gate="first"))
        waiting = await mediator.enqueue(Gated(tag="waiting"))
        await eventually(lambda: worker.prefetched == 1, what="a job in the buffer")

        assert await waiting.abort() is True
        with pytest.raises(JobFailedError, match="aborted before it started"):
            await waiting.result(timeout=5)
        assert await waiting.status() is JobStatus.ABORTED
        assert worker.prefetched == 0
        probe.gates["first"].set()
        assert await first.result(timeout=5) == "first"
    assert probe.starts == ["first"]


async def test_a_stopping_worker_gives_its_buffer_back_at_once_untried(
    mediator: Mediator, probe: Probe, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop returns buffered jobs while the running one still finishes; they keep their try and place."""
    async with running_worker(mediator, name="stopping", max_jobs=1, **FAST) as stopping:
        fixed_size(monkeypatch, stopping, 2)
        running = await mediator.enqueue(Gated(tag="running", gate="running"))
        waiting = [await mediator.enqueue(Gated(tag=f"waiting-{n}")) for n in range(2)]
        await eventually(lambda: stopping.prefetched == 2, what="two jobs in the buffer")

        stopping.stop()
        for handle in waiting:
            await eventually(partial(deliveries_of, redis, handle.id, 0), what="given back untried")
            assert await handle.status() is JobStatus.QUEUED
        async with running_worker(mediator, name="other", max_jobs=1, **FAST):
            for n, handle in enumerate(waiting):
                assert await handle.result(timeout=5) == f"waiting-{n}"
                record = await handle.record()
                assert record is not None
                assert (record.worker, record.try_number) == ("other", 1)
        assert probe.starts.count("running") == 1
        probe.gates["running"].set()
        assert await running.result(timeout=5) == "running"


async def test_the_heartbeat_renews_a_buffered_lease_and_drops_a_lost_one(
    mediator: Mediator, probe: Probe, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {**FAST, "lease": 1.0}
    async with running_worker(mediator, name="w", max_jobs=1, **settings) as worker:
        fixed_size(monkeypatch, worker, 1)
        first = await mediator.enqueue(Gated(tag="first", gate="first"))
        waiting = await mediator.enqueue(Gated(tag="waiting"))
        await eventually(lambda: worker.prefetched == 1, what="a job in the buffer")
        claimed_until = await redis.zscore(running_key("default"), waiting.id)
        assert claimed_until is not None

        async def renewed_past_one_lease() -> bool:
            score = await redis.zscore(running_key("default"), waiting.id)
            return score is not None and score > claimed_until + 1000

        await eventually(renewed_past_one_lease, timeout=5, what="the buffered lease renewed for a lease")
        assert worker.prefetched == 1

        await redis.set(lease_key(waiting.id), "another.1", px=60_000)  # another claim holds it now
        await eventually(lambda: worker.prefetched == 0, what="the lost job to leave the buffer")
        assert worker.counters.lost == 1
        probe.gates["first"].set()
        assert await first.result(timeout=5) == "first"
        assert await redis.get(lease_key(waiting.id)) == b"another.1"
    assert probe.starts == ["first"]


async def deliveries_of(redis: Redis, job_id: str, count: int) -> bool:
    return int(await redis.get(deliveries_key(job_id)) or 0) == count
