"""Recurring jobs: registration, manual triggers, once-per-tick enqueueing, and the workers' schedule loop."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from arq_mediator import Context, JobStatus, Mediator, NoHandlerError, RecurringJob, Request
from arq_mediator._cron import CronSchedule
from arq_mediator._recurring import run_schedules
from tests.keys import queue_key

from .conftest import BaseProbe, running_worker
from .waiting import FAST, eventually


class Tick(Request[int]):
    n: int = 0


class Orphan(Request[int]):
    pass


@dataclass
class Probe(BaseProbe):
    """Per-test state: the (job id, wall-clock start) of every Tick run."""

    runs: list[tuple[str, float]] = field(default_factory=list)
    ran: asyncio.Event = field(default_factory=asyncio.Event)


async def tick(request: Tick, ctx: Context) -> int:
    assert ctx.job is not None
    probe = ctx.resource(Probe)
    probe.runs.append((ctx.job.id, time.time()))
    probe.ran.set()
    return request.n


class FixedTicks:
    """A stand-in schedule: fires at each of *ticks* in turn, then not for a day."""

    def __init__(self, *ticks: datetime) -> None:
        self.ticks = ticks

    def next_after(self, moment: datetime) -> datetime:
        upcoming = [fire for fire in self.ticks if fire > moment]
        return upcoming[0] if upcoming else moment + timedelta(days=1)


class TicksFromFirstLook(FixedTicks):
    """A stand-in schedule whose ticks are *offsets* (seconds) after the moment it is first asked about.

    A schedule loop asks when it starts, so the ticks fall a little after that, however late the worker
    started on a loaded machine; ticks fixed when the test began could already have passed by then.
    """

    def __init__(self, *offsets: float) -> None:
        super().__init__()
        self.offsets = offsets

    def next_after(self, moment: datetime) -> datetime:
        if not self.ticks:
            self.ticks = tuple(moment + timedelta(seconds=offset) for offset in self.offsets)
        return super().next_after(moment)


def reschedule(entry: RecurringJob, schedule: FixedTicks) -> None:
    """Swap the (frozen) entry's cron schedule for *schedule*."""
    object.__setattr__(entry, "schedule", schedule)


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with."""
    mediator.handler(queue="ticks")(tick)


def tick_id(name: str, moment: datetime) -> str:
    return f"recurring:{name}:{int(moment.timestamp())}"


def unique_name() -> str:
    """Return a schedule name no other run uses, since it fixes job ids and completion channels are shared."""
    return f"tick-{uuid.uuid4().hex[:12]}"


async def test_recurring_registers_a_named_schedule(mediator: Mediator) -> None:
    """`recurring()` records the request under its name with its parsed cron schedule."""
    entry = mediator.recurring(Tick(n=1), cron="*/5 * * * *", name="tick")
    unnamed = mediator.recurring(Tick(n=2), cron="@hourly")

    assert isinstance(entry, RecurringJob)
    assert (entry.name, entry.request) == ("tick", Tick(n=1))
    assert entry.schedule == CronSchedule("*/5 * * * *")
    assert unnamed.name == Tick.message_name
    jobs = mediator.recurring_jobs
    assert jobs == {"tick": entry, Tick.message_name: unnamed}
    jobs.clear()
    assert len(mediator.recurring_jobs) == 2  # a copy was returned


async def test_recurring_refuses_bad_registrations(mediator: Mediator) -> None:
    """An unhandled request type, a taken name, an invalid expression or zone are refused at registration."""
    mediator.recurring(Tick(), cron="* * * * *", name="tick")

    with pytest.raises(NoHandlerError, match="Orphan"):
        mediator.recurring(Orphan(), cron="* * * * *", name="orphan")
    with pytest.raises(ValueError, match="already registered"):
        mediator.recurring(Tick(), cron="0 * * * *", name="tick")
    with pytest.raises(ValueError, match="expected 5 fields"):
        mediator.recurring(Tick(), cron="* * *", name="short")
    with pytest.raises(ValueError, match="outside"):
        mediator.recurring(Tick(), cron="61 * * * *", name="minute-61")
    with pytest.raises(ValueError, match="unknown time zone"):
        mediator.recurring(Tick(), cron="* * * * *", name="nowhere", tz="Nowhere/Atlantis")
    assert list(mediator.recurring_jobs) == ["tick"]


async def test_trigger_enqueues_the_request_now(mediator: Mediator, probe: Probe) -> None:
    """`trigger(name)` enqueues the recurring request at once, besides its schedule, and it runs."""
    mediator.recurring(Tick(n=4), cron="0 0 1 1 *", name="tick")
    async with running_worker(mediator, queues=["ticks"], **FAST):
        handle = await mediator.trigger("tick")
        again = await mediator.trigger("tick")
        assert await handle.result(timeout=3) == 4
        assert await again.result(timeout=3) == 4

    assert handle.id.startswith("recurring:tick:manual:")
    assert handle.id != again.id  # every trigger is a job of its own
    assert handle.queue == "ticks"
    assert sorted(job_id for job_id, _ in probe.runs) == sorted([handle.id, again.id])


async def test_trigger_of_an_unknown_name_lists_the_names(mediator: Mediator) -> None:
    """Triggering a name nobody registered raises KeyError listing the names there are."""
    with pytest.raises(KeyError, match="there are: none"):
        await mediator.trigger("nope")

    mediator.recurring(Tick(), cron="* * * * *", name="tick")
    mediator.recurring(Tick(), cron="0 * * * *", name="hourly")
    with pytest.raises(KeyError, match="there are: hourly, tick"):
        await mediator.trigger("nope")


async def test_a_tick_is_enqueued_once_however_many_workers_reach_it(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """Five workers enqueueing the same tick at once add exactly one job, and it runs once."""
    name = unique_name()
    entry = mediator.recurring(Tick(n=1), cron="* * * * *", name=name)
    moment = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    added = await asyncio.gather(*(mediator.enqueue_tick(entry, moment) for _ in range(5)))

    assert sorted(added) == [False] * 4 + [True]
    assert await redis.zcard(queue_key("ticks")) == 1
    async with running_worker(mediator, queues=["ticks"], **FAST):
        assert await mediator.job(tick_id(name, moment)).result(timeout=3) == 1
    assert await mediator.enqueue_tick(entry, moment) is False  # finished, result kept: still once
    assert [job_id for job_id, _ in probe.runs] == [tick_id(name, moment)]


async def test_two_ticks_are_two_jobs(mediator: Mediator, redis: Redis) -> None:
    """Each tick of a schedule is a job of its own."""
    name = unique_name()
    entry = mediator.recurring(Tick(), cron="* * * * *", name=name)
    first = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    second = first + timedelta(minutes=1)

    assert await mediator.enqueue_tick(entry, first) is True
    assert await mediator.enqueue_tick(entry, second) is True
    assert await redis.zcard(queue_key("ticks")) == 2
    assert await mediator.job(tick_id(name, first)).status() is JobStatus.QUEUED
    assert await mediator.job(tick_id(name, second)).status() is JobStatus.QUEUED


async def test_running_workers_enqueue_a_recurring_job_when_its_tick_arrives(
    mediator: Mediator, redis: Redis, probe: Probe
) -> None:
    """Workers running the schedule loop enqueue the job at its tick, not before, once between them."""
    name = unique_name()
    entry = mediator.recurring(Tick(n=9), cron="* * * * *", name=name)
    schedule = TicksFromFirstLook(0.2)
    reschedule(entry, schedule)

    async with (
        running_worker(mediator, queues=["ticks"], name="one", **FAST),
        running_worker(mediator, queues=["ticks"], name="two", **FAST),
    ):
        await asyncio.wait_for(probe.ran.wait(), 3)
        [due] = schedule.ticks
        assert await mediator.job(tick_id(name, due)).result(timeout=3) == 9

    [(job_id, started)] = probe.runs
    assert job_id == tick_id(name, due)
    assert started >= due.timestamp() - 0.001
    assert await redis.zcard(queue_key("ticks")) == 0


async def test_the_schedule_loop_survives_a_redis_error(
    mediator: Mediator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick that cannot be enqueued is skipped with a warning, and the loop goes on to the next tick."""
    entry = mediator.recurring(Tick(), cron="* * * * *", name="tick")
    schedule = TicksFromFirstLook(0.05, 0.1)
    reschedule(entry, schedule)
    attempts: list[datetime] = []

    async def enqueue_tick(entry: RecurringJob, moment: datetime) -> bool:
        attempts.append(moment)
        if len(attempts) == 1:
            raise RedisConnectionError("Redis went away")
        return True

    monkeypatch.setattr(mediator, "enqueue_tick", enqueue_tick)
    stopping = asyncio.Event()
    loop = asyncio.create_task(run_schedules(mediator, stopping))
    try:
        await eventually(lambda: len(attempts) == 2)
    finally:
        stopping.set()
        await asyncio.wait_for(loop, 3)

    assert attempts == list(schedule.ticks)
