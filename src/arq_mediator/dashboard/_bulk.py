"""Bulk actions: one action on every job in a state, over any `DashboardSource`, in bounded batches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from ._model import DashboardSource, JobState

# Jobs one bulk action handles per round trip, and in all per call.
BULK_BATCH = 100
BULK_LIMIT = 10_000


async def apply_to_all(
    source: DashboardSource,
    action: Literal["requeue", "delete", "abort"],
    state: JobState,
    queue: str | None = None,
) -> int:
    """Apply *action* to every job of *source* in *state* (of *queue*); return how many it applied to.

    It reads the list's first page again after each batch, as the batch moved its jobs off the list; an
    id seen before is not acted on twice, so a job the action leaves in place ends the loop.

    Raises:
        ValueError: an unknown action.
    """
    actions: dict[str, Callable[[str], Awaitable[bool]]] = {
        "requeue": source.requeue,
        "delete": source.delete,
        "abort": source.abort,
    }
    if action not in actions:
        raise ValueError(f"action must be one of {', '.join(actions)}; got {action!r}")
    act = actions[action]
    seen: set[str] = set()
    done = 0
    while len(seen) < BULK_LIMIT:
        page = await source.jobs(JobState(state), queue=queue, limit=BULK_BATCH, offset=0)
        fresh = [row.id for row in page.items if row.id not in seen]
        if not fresh:
            break
        seen.update(fresh)
        outcomes = await asyncio.gather(*(act(job_id) for job_id in fresh))
        done += sum(outcomes)
    return done
