"""The arq worker process: `Settings` for its CLI, `run_quiet` for the fast variant (no per-job log lines)."""

from __future__ import annotations

import logging

from arq.worker import run_worker

from .arq_peer import settings
from .workload import fast, redis_url

Settings = settings(redis_url(), fast())


def run_quiet() -> None:
    """Run arq's worker logging warnings only."""
    logging.basicConfig(level=logging.WARNING)
    run_worker(Settings)
