"""The schedule loop every worker runs: enqueue each recurring job once per tick, whoever gets there first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ._keys import recurring_key
from ._resilience import LoopHealth

if TYPE_CHECKING:
    from ._mediator import Mediator
    from ._recurring_jobs import RecurringJob

logger = logging.getLogger("arq_mediator.recurring")


async def run_schedules(mediator: Mediator, stopping: asyncio.Event) -> None:
    """Enqueue every recurring job of *mediator* at each of its ticks until *stopping* is set.

    All workers run this loop. Redis keeps the last tick enqueued per schedule, and a tick is enqueued
    only when it is later than that one, so one job runs per tick however many workers reach it. A tick
    missed while no worker ran is enqueued once when one starts, if it is within the schedule's misfire
    grace (one interval by default).
    """
    entries = list(mediator.recurring_jobs.values())
    upcoming = {entry.name: await _first_tick(mediator, entry) for entry in entries}
    health = LoopHealth(logger, "recurring schedules")
    while not stopping.is_set():
        name = min(upcoming, key=upcoming.__getitem__)
        delay = (upcoming[name] - datetime.now(UTC)).total_seconds()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stopping.wait()
            continue
        entry = mediator.recurring_jobs[name]
        try:
            if await mediator.enqueue_tick(entry, upcoming[name]):
                logger.info("enqueued recurring job %s for %s", name, upcoming[name].isoformat())
            health.succeeded()
        except Exception as error:  # Redis down or refusing: this tick is skipped, the next one runs
            health.failed(error)
        # From now, not from the tick: after a long stall one late run stands for all the missed ticks.
        upcoming[name] = entry.schedule.next_after(max(upcoming[name], datetime.now(UTC)))


async def _first_tick(mediator: Mediator, entry: RecurringJob) -> datetime:
    """Return the tick a starting worker waits for: a missed one within the grace, else the next one."""
    now = datetime.now(UTC)
    following = entry.schedule.next_after(now)
    try:
        raw = await mediator._jobs.redis.get(recurring_key(entry.name))
        last_ms = int(raw) if raw is not None else None
    except Exception:  # Redis down, or a value that is not a tick: no catching up, the schedule goes on
        return following
    if last_ms is None:  # never enqueued: a new schedule starts with its next tick
        return following
    grace = entry.misfire_grace
    if grace is None:  # one interval, measured where the schedule is now
        grace = entry.schedule.next_after(following) - following
    start = max(datetime.fromtimestamp(last_ms / 1000, UTC), now - grace)
    missed = None
    tick = entry.schedule.next_after(start)
    for _ in range(_MAX_MISSED_TICKS):
        if tick > now:
            break
        missed, tick = tick, entry.schedule.next_after(tick)
    return missed or following


# Bounds the walk over missed ticks when a long grace meets a frequent schedule.
_MAX_MISSED_TICKS = 100_000
