"""What the job client reads of the queues and workers: stats, live workers, failed jobs, queue names."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from ._envelope import ResultRecord
from ._keys import FAILED_PREFIX, QUEUE_PREFIX, QUEUES_KEY, RESULT_PREFIX, WORKERS_KEY
from ._per_queue import PerQueueCalls


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for one queue: ready to run, running now, deferred to later, and failed (kept)."""

    name: str
    ready: int
    running: int
    deferred: int
    failed: int


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One live worker process, as its last heartbeat described it."""

    name: str
    instance: str
    host: str
    pid: int
    queues: list[str]
    max_jobs: int
    running: int
    succeeded: int
    failed: int
    retried: int
    started_at: int
    last_seen: int
    lost: int = 0
    types: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of every known queue and live worker, with totals."""

    queues: list[QueueStats]
    workers: list[WorkerState]

    @property
    def totals(self) -> dict[str, int]:
        """Return ready, running, deferred and failed summed over queues, and the number of workers."""
        keys = ("ready", "running", "deferred", "failed")
        summed = {key: sum(getattr(queue, key) for queue in self.queues) for key in keys}
        return summed | {"workers": len(self.workers)}


class QueueIntrospection(PerQueueCalls):
    """The read side of `JobClient`: counts, heartbeats and failed lists, read without changing a job."""

    async def failed(self, queue: str, limit: int = 100) -> list[ResultRecord]:
        """Return the most recent failed jobs of *queue*, newest first; forget those whose record expired."""
        if limit <= 0:
            return []
        # Ids stay bytes: whatever another client put in the set must not stop the listing.
        failed_key = self.layout.key(FAILED_PREFIX, queue, queue)
        job_ids: list[bytes] = await self.redis.zrevrange(failed_key, 0, limit - 1)
        if not job_ids:
            return []
        prefix = self.layout.key(RESULT_PREFIX, queue, "").encode()
        raws = await self.redis.mget([prefix + job_id for job_id in job_ids])
        expired = [job_id for job_id, raw in zip(job_ids, raws, strict=True) if raw is None]
        if expired:
            await self.redis.zrem(failed_key, *expired)
        records = []
        for raw in raws:
            if raw is not None:
                with contextlib.suppress(ValidationError):
                    records.append(ResultRecord.model_validate_json(raw))
        return records

    async def workers(self) -> list[WorkerState]:
        """Return every worker whose heartbeat has not expired, from the registry their heartbeats keep.

        On a cluster each queue has its own registry (a worker beats in each of its queues' slots): they
        are read all at once, and a worker serving several queues is listed once.
        """
        if not self.layout.cluster:
            raws = await self._live_workers(WORKERS_KEY)
        else:
            parts = await asyncio.gather(
                *(
                    self._live_workers(self.layout.named(WORKERS_KEY, queue))
                    for queue in await self.queue_names()
                )
            )
            raws = [raw for part in parts for raw in part]
        states = {state.instance: state for raw in raws if (state := _worker_state(raw)) is not None}
        return sorted(states.values(), key=lambda state: (state.name, state.instance))

    async def _live_workers(self, registry: str) -> list[bytes]:
        """Return the heartbeat records a workers registry lists; forget those that expired."""
        keys: list[bytes] = await self.redis.zrange(registry, 0, -1)
        raws = await self.redis.mget(keys) if keys else []
        gone = [key for key, raw in zip(keys, raws, strict=True) if raw is None]
        if gone:
            await self.redis.zrem(registry, *gone)
        return [raw for raw in raws if raw is not None]

    async def queue_names(self) -> set[str]:
        """Return every queue a job was enqueued on, from the registry the enqueue script keeps."""
        names: set[bytes] = await self.redis.smembers(QUEUES_KEY)  # type: ignore[misc]
        return {name.decode(errors="replace") for name in names}

    async def _every_queue(self) -> set[str]:
        """Return every queue in Redis, those found only by a SCAN of the keyspace included."""
        pattern = QUEUE_PREFIX + "*"
        scanned = {key[len(QUEUE_PREFIX) :] async for key in self.redis.scan_iter(match=pattern, count=500)}
        return await self.queue_names() | {name.decode(errors="replace") for name in scanned}

    async def stats(self, known_queues: set[str]) -> Stats:
        """Return counts for *known_queues*, the queues in Redis and the queues of live workers."""
        workers = await self.workers()
        names = sorted(known_queues | await self.queue_names() | {q for w in workers for q in w.queues})
        counts = await self.queue_counts(names)
        queues = [QueueStats(name, *counts[i * 4 : i * 4 + 4]) for i, name in enumerate(names)]
        return Stats(queues=queues, workers=workers)


def _worker_state(raw: bytes) -> WorkerState | None:
    """Read a worker's heartbeat record; ``None`` when it is not one (another client's key, say)."""
    try:
        return WorkerState(**json.loads(raw))
    except (TypeError, ValueError):
        return None
