"""The streaq worker process's worker, for `streaq run ...streaq_worker:worker`, and its quiet start."""

from __future__ import annotations

import logging

from .streaq_peer import worker as make_worker
from .workload import redis_url

worker, task = make_worker(redis_url())


def run_quiet() -> None:
    """Run the worker logging warnings only."""
    logging.basicConfig(level=logging.WARNING)
    worker.run_sync()
