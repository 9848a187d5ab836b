"""What operators and health checks ask of a mediator's queues: a ping, stats, failed jobs, a requeue."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._errors import redis_unavailable_as_queue_error
from ._handle import JobHandle
from ._queue_access import QueueAccess

if TYPE_CHECKING:
    from ._envelope import ResultRecord
    from ._queue_introspection import Stats


class QueueAdmin(QueueAccess):
    """Health, counts and failed jobs of the queues, and putting a failed job back on its queue."""

    async def ping(self) -> float:
        """Check that the job queue's Redis answers; return the round trip in seconds (for health checks).

        Raises:
            QueueNotConnectedError: the mediator has no Redis connection open.
            QueueUnavailableError: Redis could not be reached or did not answer in time.
        """
        began = time.perf_counter()
        with redis_unavailable_as_queue_error():
            await self._jobs.redis.ping()
        return time.perf_counter() - began

    async def stats(self) -> Stats:
        """Return per-queue counts (ready, running, deferred, failed), live workers, and totals."""
        with redis_unavailable_as_queue_error():
            return await self._jobs.stats(self._known_queues())

    def _known_queues(self) -> set[str]:
        """Return the queues the registered handlers send their jobs to."""
        specs = list(self._registry.requests.values())
        specs += [spec for group in self._registry.notifications.values() for spec in group]
        return {spec.policy.queue for spec in specs}

    async def failed_jobs(self, queue: str, limit: int = 100) -> list[ResultRecord]:
        """Return the newest failed jobs of *queue* with their error records."""
        with redis_unavailable_as_queue_error():
            return await self._jobs.failed(queue, limit)

    async def requeue(self, job_id: str) -> JobHandle[Any]:
        """Put failed (or aborted) job *job_id* back on its queue with all its tries; return its handle.

        The handle's ``enqueued`` is ``False`` when a job with that id was already queued or running, so
        nothing was requeued.

        Raises:
            JobNotFoundError: no failed job with that id is kept.
        """
        with redis_unavailable_as_queue_error():
            queue, requeued = await self._jobs.requeue(job_id)
        # On a cluster an id given without its queue's tag gets it back: the handle names the job's key.
        return JobHandle(self._jobs, self._layout.job_id(queue, job_id), queue, None, enqueued=requeued)
