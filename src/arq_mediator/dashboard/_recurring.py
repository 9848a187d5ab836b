"""The recurring jobs' list: each one's schedule, next and last run, and how its last run ended.

Two pipelined round trips whatever the number of entries: every entry's last tick, then each last job's
history state and result record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._history import history_key
from .._jobs import status_of
from .._keys import JOB_PREFIX, RECURRING_PREFIX, RESULT_PREFIX
from ._model import JobState, RecurringSummary
from ._records import moment, record_of, state_of, tick_job_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .._layout import Layout
    from .._mediator import Mediator


async def recurring_summaries(mediator: Mediator, redis: Redis, layout: Layout) -> list[RecurringSummary]:
    """Return *mediator*'s recurring jobs, sorted by name, as their Redis records them."""
    entries = sorted(mediator.recurring_jobs.values(), key=lambda entry: entry.name)
    if not entries:
        return []
    queues = [mediator._registry.handler_for(type(entry.request)).policy.queue for entry in entries]
    async with redis.pipeline(transaction=False) as pipe:
        for entry, queue in zip(entries, queues, strict=True):
            pipe.get(layout.key(RECURRING_PREFIX, queue, entry.name))
        ticks = await pipe.execute()
    last_ids = [
        None if (job_id := tick_job_id(entry.name, tick)) is None else layout.job_id(queue, job_id)
        for entry, tick, queue in zip(entries, ticks, queues, strict=True)
    ]
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, queue in zip(last_ids, queues, strict=True):
            pipe.hget(history_key(job_id or layout.job_id(queue, "-"), layout), "state")
            pipe.get(layout.job_key(RESULT_PREFIX, job_id or layout.job_id(queue, "-")))
            pipe.exists(layout.job_key(JOB_PREFIX, job_id or layout.job_id(queue, "-")))
        replies = await pipe.execute()
    now = datetime.now(UTC)
    summaries = []
    for index, (entry, tick, job_id) in enumerate(zip(entries, ticks, last_ids, strict=True)):
        history_state, raw_record, queued = replies[3 * index : 3 * index + 3]
        record = record_of(raw_record)
        outcome = JobState(status_of(record).value) if record is not None else None
        if outcome is None and history_state is not None:
            outcome = state_of(history_state, JobState.ENQUEUED)
        elif outcome is None and queued:  # a job due now has no history until it is claimed
            outcome = JobState.ENQUEUED
        spec = mediator._registry.handler_for(type(entry.request))
        summaries.append(
            RecurringSummary(
                name=entry.name,
                cron=entry.schedule.expression,
                request_type=type(entry.request).message_name,
                queue=spec.policy.queue,
                next_run=entry.schedule.next_after(now),
                last_run=moment(tick),
                last_outcome=outcome if job_id else None,
                last_job_id=job_id,
            )
        )
    return summaries
