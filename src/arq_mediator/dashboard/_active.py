"""Lists of jobs not finished yet (enqueued, scheduled, running, retrying), read from the engine's own sets.

A queue is a sorted set of the job ids not taken yet, scored by when each is due; a queue's running set
holds the ids its workers took (off the queue), scored by lease deadline; the history's retrying set
holds the ids waiting for a retry.
A page reads, from each queue, as many of the newest entries as the page reaches, and merges them: the
cost grows with the page's end and the number of queues, never with the backlog. Narrowed to a request
type, a list reads at most *scan_limit* entries over all queues (or the page's end from each), as these
sets have no index per type.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from .._history import RETRYING_KEY, history_key, shared_keys
from .._jobs import envelope_of, now_ms
from .._keys import JOB_PREFIX, QUEUE_PREFIX, RUNNING_PREFIX
from .._layout import SINGLE, Layout
from ._model import JobState
from ._records import text

if TYPE_CHECKING:
    from redis.asyncio import Redis

# (score, id) pairs, newest first.
Entries = list[tuple[float, str]]


class ActiveLists:
    """Page through the unfinished jobs of some queues.

    Args:
        redis: The mediator's Redis client.
        scan_limit: The most entries a list narrowed to a request type reads, over all queues.
    """

    def __init__(self, redis: Redis, scan_limit: int, layout: Layout = SINGLE) -> None:
        self._redis = redis
        self._scan_limit = scan_limit
        self._layout = layout

    async def page(
        self, state: JobState, queues: list[str], request_type: str | None, offset: int, limit: int
    ) -> tuple[list[str], int]:
        """Return the ids of one page of unfinished jobs in *state*, newest first, and how many there are."""
        now = now_ms()
        running, retrying = await self._running_and_retrying(queues, now)
        if state in (JobState.RUNNING, JobState.RETRYING):  # a few: as many as workers run, or wait
            chosen = running if state is JobState.RUNNING else retrying
            entries = sorted(((score, job_id) for job_id, score in chosen.items()), reverse=True)
            return await self._narrowed(entries, request_type, offset, limit)
        due = state is JobState.ENQUEUED
        low, high = ("-inf", now) if due else (f"({now}", "+inf")
        excluded = set() if due else set(retrying)  # a running job is off its queue
        # Narrowed to a type, the queues share the scan's budget (a page needs at least its own end).
        wanted = (
            max(self._scan_limit // max(len(queues), 1), offset + limit) if request_type else offset + limit
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                key = self._layout.key(QUEUE_PREFIX, queue, queue)
                pipe.zrevrangebyscore(key, high, low, start=0, num=wanted + len(excluded), withscores=True)
                pipe.zcount(key, low, high)
            replies = await pipe.execute()
        lists: list[Entries] = []
        total = 0
        for index in range(len(queues)):
            entries, count = replies[2 * index], replies[2 * index + 1]
            mine = [(float(score), text(job_id)) for job_id, score in entries]
            lists.append([entry for entry in mine if entry[1] not in excluded])
            total += count
        merged = list(heapq.merge(*lists, reverse=True))
        if request_type:
            return await self._narrowed(merged, request_type, offset, limit)
        return [job_id for _, job_id in merged[offset : offset + limit]], max(total - len(excluded), 0)

    async def _running_and_retrying(
        self, queues: list[str], now: int
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Return the running jobs of *queues* and the jobs of *queues* waiting for a retry, with scores."""
        retrying_keys = shared_keys(RETRYING_KEY, self._layout, queues)
        async with self._redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                running_key = self._layout.key(RUNNING_PREFIX, queue, queue)
                pipe.zrangebyscore(running_key, f"({now}", "+inf", withscores=True)
            for key in retrying_keys:
                pipe.zrangebyscore(key, f"({now}", "+inf", start=0, num=self._scan_limit, withscores=True)
            replies = await pipe.execute()
        running = {text(job_id): float(score) for reply in replies[: len(queues)] for job_id, score in reply}
        waiting = {text(job_id): float(score) for reply in replies[len(queues) :] for job_id, score in reply}
        chosen = set(queues)
        places = await self._facts(list(waiting), "queue")
        retrying = {job_id: score for job_id, score in waiting.items() if places.get(job_id) in chosen}
        return running, retrying

    async def _narrowed(
        self, entries: Entries, request_type: str | None, offset: int, limit: int
    ) -> tuple[list[str], int]:
        """Return one page of *entries* of *request_type* (all when ``None``), and how many there are."""
        if request_type:
            kinds = await self._facts([job_id for _, job_id in entries], "type")
            entries = [entry for entry in entries if kinds.get(entry[1]) == request_type]
        return [job_id for _, job_id in entries[offset : offset + limit]], len(entries)

    async def _facts(self, job_ids: list[str], name: str) -> dict[str, str]:
        """Return one history field ("queue" or "type") of each job, or its envelope's without history."""
        if not job_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(history_key(job_id, self._layout), name)
            replies: list[Any] = await pipe.execute()
        facts = {job_id: text(value) for job_id, value in zip(job_ids, replies, strict=True) if value}
        unknown = [job_id for job_id in job_ids if job_id not in facts]
        if unknown:
            keys = [self._layout.job_key(JOB_PREFIX, job_id) for job_id in unknown]
            if self._layout.cluster:  # keys of many slots
                bodies = [await self._redis.get(key) for key in keys]
            else:
                bodies = await self._redis.mget(keys)
            for job_id, body in zip(unknown, bodies, strict=True):
                envelope = envelope_of(body)
                if envelope is not None:
                    facts[job_id] = envelope.type if name == "type" else envelope.queue
        return facts
