"""Reads of single jobs: the rows of a list, a finished-jobs page, a job's full detail and kept envelope.

Each is one or two pipelined round trips: a history hash and the job's key per row, every key of one job
for its detail. A finished list is a range on its history index (one per queue on a cluster, merged).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from .._history import history_key, index_key, logs_key, shared_keys, steps_key
from .._jobs import envelope_of, now_ms, status_of
from .._keys import JOB_PREFIX, LEASE_PREFIX, QUEUE_PREFIX, RESULT_PREFIX, RETRY_MARK
from ._model import JobDetail, JobState, JobSummary, Page
from ._records import (
    SUMMARY_FIELDS,
    detail_of,
    kept_envelope_of,
    record_of,
    state_of,
    summary_of,
    text,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .._envelope import JobEnvelope, ResultRecord
    from .._layout import Layout


class JobReads:
    """Read jobs by id, and pages of finished jobs, from a mediator's Redis.

    Args:
        redis: The mediator's Redis client.
        layout: Where its keys live (one server, or each queue's slot on a cluster).
    """

    def __init__(self, redis: Redis, layout: Layout) -> None:
        self._redis = redis
        self._layout = layout

    async def finished(
        self,
        state: JobState,
        queue: str | None,
        request_type: str | None,
        queues: list[str],
        offset: int,
        limit: int,
    ) -> Page[JobSummary]:
        """Return one page of the finished jobs in *state*; *queues* are the indexes read on a cluster."""
        key = index_key(state.value, queue or None, request_type or None)
        if self._layout.cluster:
            return await self._finished_merged(shared_keys(key, self._layout, queues), state, offset, limit)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zrevrange(key, offset, offset + limit - 1)
            total, raw_ids = await pipe.execute()
        rows = await self.summaries([text(job_id) for job_id in raw_ids], state)
        gone = set(map(text, raw_ids)) - {row.id for row in rows}
        if gone:  # their history expired before a trim reached them: unlist them now
            await self._redis.zrem(key, *gone)
        return Page(rows, max(total - len(gone), 0), offset, limit)

    async def _finished_merged(
        self, keys: list[str], state: JobState, offset: int, limit: int
    ) -> Page[JobSummary]:
        """Return one page of the finished jobs several indexes (each queue's, on a cluster) list.

        Each index gives its newest entries up to the page's end; merged by finish time, the page is cut
        from them. The cost grows with the page's end and the number of queues, not the retained jobs.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zcard(key)
                pipe.zrevrange(key, 0, offset + limit - 1, withscores=True)
            replies = await pipe.execute()
        total = sum(replies[0::2])
        lists = [[(float(score), text(job_id)) for job_id, score in entries] for entries in replies[1::2]]
        chosen = list(heapq.merge(*lists, reverse=True))[offset : offset + limit]
        rows = await self.summaries([job_id for _, job_id in chosen], state)
        return Page(rows, max(total - (len(chosen) - len(rows)), 0), offset, limit)

    async def summaries(self, job_ids: list[str], state: JobState) -> list[JobSummary]:
        """Return the list rows of *job_ids* in *state*, leaving out jobs nothing is kept of."""
        if not job_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(history_key(job_id, self._layout), list(SUMMARY_FIELDS))
                pipe.get(self._layout.job_key(JOB_PREFIX, job_id))
            replies = await pipe.execute()
        rows = []
        for index, job_id in enumerate(job_ids):
            facts, body = replies[2 * index], replies[2 * index + 1]
            if all(value is None for value in facts) and body is None:
                continue
            rows.append(summary_of(job_id, facts, state, envelope_of(body) if body else None))
        return rows

    async def detail(self, job_id: str) -> JobDetail | None:
        """Return everything kept of *job_id* (an id as stored, its tag included); ``None`` if nothing is."""
        layout = self._layout
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(history_key(job_id, layout))
            pipe.get(layout.job_key(JOB_PREFIX, job_id))
            pipe.get(layout.job_key(RESULT_PREFIX, job_id))
            pipe.get(layout.job_key(LEASE_PREFIX, job_id))
            pipe.lrange(logs_key(job_id, layout), 0, -1)
            pipe.lrange(steps_key(job_id, layout), 0, -1)
            raw_facts, body, raw_record, lease, log_lines, raw_steps = await pipe.execute()
        facts = {text(name): value for name, value in raw_facts.items()}
        record = record_of(raw_record)
        if not facts and body is None and record is None:
            return None
        envelope = envelope_of(body) or (record.job if record else None) or kept_envelope_of(raw_steps)
        state = await self._state_of(job_id, facts, body, envelope, record, lease)
        return detail_of(job_id, state, facts, body, envelope, record, raw_steps, log_lines)

    async def _state_of(
        self,
        job_id: str,
        facts: dict[str, Any],
        body: bytes | None,
        envelope: JobEnvelope | None,
        record: ResultRecord | None,
        lease: bytes | None,
    ) -> JobState:
        """Return where a job stands: its result says how it ended, its lease whether it runs."""
        if record is not None:
            return JobState(status_of(record).value)
        if body is None:  # its result expired: the history says how it ended
            return state_of(facts.get("state"), JobState.SUCCEEDED)
        holder = text(lease)
        if holder == RETRY_MARK:
            return JobState.RETRYING
        if holder:
            return JobState.RUNNING
        queue = envelope.queue if envelope is not None else text(facts.get("queue"))
        queue_key = self._layout.key(QUEUE_PREFIX, queue, queue)
        score = await self._redis.zscore(queue_key, job_id) if queue else None
        return JobState.SCHEDULED if score is not None and score > now_ms() else JobState.ENQUEUED

    async def kept_envelope(self, job_id: str) -> JobEnvelope | None:
        """Return the envelope a finished job's result record or history kept."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self._layout.job_key(RESULT_PREFIX, job_id))
            pipe.lrange(steps_key(job_id, self._layout), 0, -1)
            raw_record, raw_steps = await pipe.execute()
        record = record_of(raw_record)
        if record is not None and record.job is not None:
            return record.job
        return kept_envelope_of(raw_steps)
