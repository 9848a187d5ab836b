"""How a worker process runs (`WorkerSettings`), and what it says about itself when it starts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

    from ._mediator import Mediator

logger = logging.getLogger("arq_mediator.worker")
# The most jobs a worker claims ahead of its free slots by default (see `WorkerSettings.prefetch`).
PREFETCH = 8


class Relay(Protocol):
    """What a worker runs beside its jobs until it stops: an `arq_mediator.outbox.OutboxRelay`."""

    async def run(self, stop: asyncio.Event) -> None:
        """Work until *stop* is set."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How one worker process runs: its queues in priority order and its concurrency cap.

    Attributes:
        queues: Queues to take jobs from, the first highest in priority.
        max_jobs: Jobs running at once, at most, across all its queues.
        name: A readable name for logs and stats; host and pid by default.
        lease: Seconds a job stays claimed without a heartbeat; a crashed worker's jobs return after this.
        heartbeat: Seconds between heartbeats (which renew leases and the worker's registry entry).
        idle_check: Seconds between claims when no wake-up arrives (picks up jobs whose lease expired).
        grace: Seconds running jobs get to finish after a stop request before they are given back.
        max_lost: Times a job may lose its worker before it is failed as poison.
        unknown_type_delay: Seconds a job whose type this worker has no handler for waits before another
            worker may take it, when a live worker serving its queue has a handler (a rolling deploy).
        unknown_type_timeout: Seconds after which such a job fails anyway with `NoHandlerError`.
        prefetch: Jobs of the first queue the worker may claim beyond its free slots, so a slot that frees
            starts its next job without waiting for a claim's round trip; 0 turns it off. The worker holds
            only as many as cover one claim's latency at its recent completion rate (a few for jobs of
            milliseconds, none for jobs of seconds): a prefetched job is leased, and no idle peer can take it.
        relay: An outbox relay the worker runs while it runs, so committed outbox rows reach Redis with
            no process of their own; several workers may each run one.
        push_when_idle: Whether an idle worker registers for pushes: an enqueue then claims a new job for
            it and hands it over in one message, instead of waking it to claim (one server or Sentinel;
            on Redis Cluster workers are always woken).
    """

    queues: Sequence[str]
    max_jobs: int = 10
    name: str | None = None
    lease: float = 10.0
    heartbeat: float = 2.0
    idle_check: float = 1.0
    grace: float = 25.0
    max_lost: int = 5
    unknown_type_delay: float = 5.0
    unknown_type_timeout: float = 300.0
    prefetch: int = PREFETCH
    relay: Relay | None = None
    push_when_idle: bool = True

    def __post_init__(self) -> None:
        if not self.queues or any(not queue for queue in self.queues):
            raise ValueError("a worker needs one or more non-empty queue names")
        if len(set(self.queues)) != len(self.queues):
            raise ValueError(f"a worker's queues must be distinct, got {list(self.queues)}")
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be zero or more, got {self.prefetch}")
        if self.max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {self.max_jobs}")
        if self.max_lost < 1 or self.grace < 0 or self.idle_check <= 0:
            raise ValueError(
                f"max_lost must be at least 1, grace zero or more and idle_check positive; got "
                f"{self.max_lost=}, {self.grace=}, {self.idle_check=}"
            )
        if self.unknown_type_delay < 0 or self.unknown_type_timeout < 0:
            raise ValueError("unknown_type_delay and unknown_type_timeout must be zero or more")
        if not 0 < self.heartbeat < self.lease:
            raise ValueError(
                f"heartbeat ({self.heartbeat}s) must be positive and shorter than the lease ({self.lease}s)"
            )


def describe_capabilities(mediator: Mediator, worker: str, queues: Sequence[str], max_jobs: int) -> None:
    """Log what a starting worker can run, queue by queue, and warn about what it looks misconfigured.

    Any handler runs from any queue, but a queue none of the handlers names as its own usually means a
    typo, or a module of handlers the worker's mediator never imported.
    """
    registry = mediator._registry
    specs = list(registry.requests.values()) + [s for group in registry.notifications.values() for s in group]
    logger.info("worker %s started: queues %s, max %d jobs", worker, ", ".join(queues), max_jobs)
    if not specs:
        logger.error(
            "worker %s has no handlers at all: every job it takes will fail. Does the module that defines "
            "its mediator import the modules that register the handlers?",
            worker,
        )
        return
    for queue in queues:
        names = sorted(spec.message_type.message_name for spec in specs if spec.policy.queue == queue)
        if names:
            logger.info("worker %s runs on queue %s: %s", worker, queue, ", ".join(names))
        else:
            logger.warning(
                "worker %s serves queue %s, but no handler sends its jobs there (handlers use: %s); "
                "check the queue name",
                worker,
                queue,
                ", ".join(sorted({spec.policy.queue for spec in specs})),
            )
