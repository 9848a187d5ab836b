"""`local_queue`: a mediator's background jobs kept in memory and run by the test itself, no Redis needed.

Jobs are encoded into the same JSON envelopes `enqueue` sends to Redis and run by the worker's own
`JobRunner`, so behaviours, retries, timeouts, aborts and result records are the worker's; only where
jobs wait and who takes them differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from .._execution import JobRunner
from .._policy import to_seconds
from .._worker_settings import WorkerSettings
from ._backoff import fixed_retry_delay
from ._store import LOCAL_WORKER, LocalJobClient, LocalOutcomes

if TYPE_CHECKING:
    from .._claims import Claim
    from .._mediator import Mediator


async def _nobody_else(message_type: str, queue: str) -> bool:
    """Answer the runner that no other worker could take a job it has no handler for."""
    return False


class LocalQueue:
    """The in-memory queues of a mediator under test; jobs run when the test says so.

    Made by `local_queue`; see there for the options.
    """

    def __init__(
        self, mediator: Mediator, store: LocalJobClient, queues: Sequence[str] | None, max_jobs: int
    ) -> None:
        self.mediator = mediator
        self._store = store
        self._queues = list(queues) if queues is not None else None
        self._max_jobs = max_jobs
        settings = WorkerSettings(queues=self._queues or ["*"], max_jobs=max_jobs, name=LOCAL_WORKER)
        self._runner = JobRunner(
            mediator, settings, LOCAL_WORKER, LocalOutcomes(store), _nobody_else, settled=lambda _: None
        )

    async def run_ready(self) -> int:
        """Run every job due now, and those they enqueue due now, until none is left; return the tries run.

        Jobs run at most ``max_jobs`` at a time, highest-priority queue first. Deferred jobs and retries
        waiting out their backoff stay queued until the clock reaches them (see `advance`).
        """
        tries = 0
        while claims := self._store.claim_due(self._queues, self._max_jobs):
            await asyncio.gather(*(self._run(claim) for claim in claims))
            tries += len(claims)
        return tries

    async def run_all(self, *, timeout: float = 30.0) -> int:
        """Run jobs until none is left, moving the clock to each deferred job or retry as it comes due.

        Returns:
            How many tries ran.

        Raises:
            TimeoutError: jobs were still left after *timeout* seconds (one that enqueues itself forever).
        """
        tries = 0
        async with asyncio.timeout(timeout):
            while True:
                tries += await self.run_ready()
                due = self._store.next_due(self._queues)
                if due is None:
                    return tries
                self._store.advance(due - self._store.now())

    def advance(self, by: timedelta | float) -> None:
        """Move the queue's clock *by* a delay (seconds or timedelta), as if that much time passed."""
        self._store.advance(int((to_seconds(by) or 0.0) * 1000))

    async def _run(self, claim: Claim) -> None:
        task = asyncio.create_task(self._runner.run(claim), name=f"job {claim.id}")
        self._store.jobs[claim.id].task = task  # so an abort can cancel the try, as a worker's would
        await task


@asynccontextmanager
async def local_queue(
    mediator: Mediator,
    *,
    queues: Sequence[str] | None = None,
    max_jobs: int = 1,
    retry_delay: float | None = None,
) -> AsyncIterator[LocalQueue]:
    """Keep *mediator*'s background jobs in memory for the block, to run with ``queue.run_all()``.

    `enqueue`, `defer`, `enqueue_many`, `enqueue_publish`, `requeue`, `failed_jobs`, `stats` and every
    `JobHandle` method work on these in-memory queues; nothing reaches Redis. The mediator's own queue
    connection, if any, is set aside and restored after.

    Args:
        mediator: The mediator under test (its lifespans are not entered: enter ``async with mediator``
            inside the block to run them too).
        queues: Run only these queues, the first highest in priority, as a worker serving them would;
            ``None`` runs every queue, jobs in the order they came due.
        max_jobs: Jobs run at once, at most.
        retry_delay: Seconds every retry waits instead of its handler's backoff (0: at once); ``None``
            keeps the backoff, which `run_all` waits out on the queue's clock, not the wall clock.
    """
    store = LocalJobClient(keep_failed=mediator.keep_failed, errors=mediator._registry.errors)
    async with AsyncExitStack() as stack:
        stack.enter_context(fixed_retry_delay(mediator, retry_delay))
        previous, mediator._client = mediator._client, store

        def restore() -> None:
            mediator._client = previous

        stack.callback(restore)
        stack.push_async_callback(store.close)
        store.queue = LocalQueue(mediator, store, queues, max_jobs)
        yield store.queue
