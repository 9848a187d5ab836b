"""Real workers in the test's event loop, on real Redis, and `drain`: wait until the queues are empty."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from .._worker import Worker
from .._worker_settings import WorkerSettings
from ._backoff import fixed_retry_delay
from ._store import LocalJobClient

if TYPE_CHECKING:
    from .._mediator import Mediator
    from .._queue_introspection import Stats

# Seconds between looks at the queues while draining: short, since each look is one round trip.
_DRAIN_POLL = 0.01


@asynccontextmanager
async def running_worker(
    mediator: Mediator,
    queues: Sequence[str] | None = None,
    *,
    retry_delay: float | None = None,
    **settings: Any,
) -> AsyncIterator[Worker]:
    """Run a real `Worker` of *mediator* in this event loop for the block; stop and drain it after.

    The mediator is opened for the block unless it is open already.

    Args:
        mediator: The mediator whose handlers the worker runs, with ``redis=`` set.
        queues: The worker's queues in priority order; every queue the handlers name by default.
        retry_delay: Seconds every retry waits instead of its handler's backoff (0: at once); ``None``
            keeps the backoff. Retry decisions (``max_tries``, ``retry_on``) are unchanged.
        settings: Further `WorkerSettings` (``max_jobs``, ``lease``, ``grace``, ...).
    """
    if queues is None:
        queues = sorted(mediator._known_queues())
    worker = Worker(mediator, WorkerSettings(queues=queues, **settings))
    async with AsyncExitStack() as stack:
        if mediator._client is None:
            await stack.enter_async_context(mediator)
        stack.enter_context(fixed_retry_delay(mediator, retry_delay))
        task = asyncio.create_task(worker.run(), name=f"{worker.name} under test")
        try:
            yield worker
        finally:
            worker.stop()
            await task


async def drain(mediator: Mediator, *, timeout: float = 10.0) -> None:
    """Wait until no job of *mediator*'s queues is ready, running or deferred (retries included).

    On a `local_queue` this runs them all (`LocalQueue.run_all`); on Redis, workers must be running.

    Raises:
        TimeoutError: jobs were left after *timeout* seconds; the message counts them per queue.
    """
    client = mediator._jobs
    if isinstance(client, LocalJobClient) and client.queue is not None:
        await client.queue.run_all(timeout=timeout)
        return
    stats = await mediator.stats()
    try:
        async with asyncio.timeout(timeout):
            while _pending(stats):
                await asyncio.sleep(_DRAIN_POLL)
                stats = await mediator.stats()
    except TimeoutError as error:
        left = "; ".join(
            f"{queue.name}: {queue.ready} ready, {queue.running} running, {queue.deferred} deferred"
            for queue in stats.queues
            if queue.ready or queue.running or queue.deferred
        )
        workers = ", ".join(f"{w.name} ({', '.join(w.queues)})" for w in stats.workers) or "none"
        message = f"queues not drained within {timeout}s: {left}. Live workers: {workers}"
        raise TimeoutError(message) from error


def _pending(stats: Stats) -> bool:
    return any(queue.ready or queue.running or queue.deferred for queue in stats.queues)
