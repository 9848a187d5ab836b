"""Run what a test enqueues, in-process: in memory with no Redis, or by real workers on a real Redis.

Either way jobs go through the same JSON envelopes, behaviours, retries, timeouts and result records as
in production. Pytest fixtures live in `arq_mediator.testing.pytest`, a plugin a test suite opts into.
"""

from ._local import LocalQueue, local_queue
from ._workers import drain, running_worker

__all__ = ["LocalQueue", "drain", "local_queue", "running_worker"]
