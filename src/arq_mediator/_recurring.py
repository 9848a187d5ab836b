"""The schedule loop every worker runs: enqueue each recurring job once per tick, whoever gets there first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from ._mediator import Mediator

logger = logging.getLogger("arq_mediator.recurring")


async def run_schedules(mediator: Mediator, stopping: asyncio.Event) -> None:
    """Enqueue every recurring job of *mediator* at each of its ticks until *stopping* is set.

    All workers run this loop. A tick's job id is fixed by the schedule's name and the tick's time, and
    enqueueing an id that is queued, running or finished adds nothing, so one job runs per tick however
    many workers reach it.
    """
    entries = list(mediator.recurring_jobs.values())
    now = datetime.now(UTC)
    upcoming = {entry.name: entry.schedule.next_after(now) for entry in entries}
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
        except (RedisError, OSError) as error:
            logger.warning("could not enqueue recurring job %s (%s); it runs at the next tick", name, error)
        # From now, not from the tick: after a long stall one late run stands for all the missed ticks.
        upcoming[name] = entry.schedule.next_after(max(upcoming[name], datetime.now(UTC)))
