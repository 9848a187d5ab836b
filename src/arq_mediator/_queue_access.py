"""What every part of a mediator's background half shares: the job client when open, and its settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cluster import is_cluster_url
from ._errors import QueueNotConnectedError
from ._layout import CLUSTER, SINGLE, Layout

if TYPE_CHECKING:
    from arq.connections import RedisSettings

    from ._jobs import JobClient
    from ._policy import Durability
    from ._registry import Registry


class QueueAccess:
    """The state the producer, the recurring jobs and the queue admin share, and the open job client.

    `Mediator` derives from it (through them) and adds the lifecycle that opens `_client`; the state is
    set up here, from the registry they all share.

    Args:
        registry: The handlers, their policies and the registered error types.
        keep_failed: Seconds a failed or aborted job's record is kept.
        max_job_bytes: The largest envelope `enqueue` accepts.
    """

    def __init__(self, registry: Registry, *, keep_failed: float, max_job_bytes: int) -> None:
        if keep_failed <= 0:
            raise ValueError(f"keep_failed must be positive, got {keep_failed}")
        if max_job_bytes < 1024:
            raise ValueError(f"max_job_bytes must be at least 1024, got {max_job_bytes}")
        self._registry = registry
        self.keep_failed = keep_failed
        self.max_job_bytes = max_job_bytes
        self._client: JobClient | None = None
        # What every enqueue waits for unless the call says otherwise: nothing, or replicas (`Durability`).
        self.durable_enqueue: Durability | None = None
        # Where the mediator's Redis is (a URL or arq settings), when it opens its own client.
        self._redis_target: str | RedisSettings | None = None

    @property
    def _layout(self) -> Layout:
        """Return the key layout of the mediator's Redis: its client's, or its URL's before it opens."""
        if self._client is not None:
            return self._client.layout
        target = self._redis_target
        return CLUSTER if isinstance(target, str) and is_cluster_url(target) else SINGLE

    @property
    def _jobs(self) -> JobClient:
        """Return the open Redis job client.

        Raises:
            QueueNotConnectedError: the mediator has no Redis connection open.
        """
        if self._client is None:
            raise QueueNotConnectedError(
                "this mediator has no Redis connection: create it with Mediator(redis=...) and enter "
                "`async with mediator:` (or call `await mediator.connect(redis)`) before enqueueing"
            )
        return self._client
