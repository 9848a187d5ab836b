"""Sentinel deployments of each test's own: a master, a replica and three sentinels on loopback ports.

Each test gets a fresh deployment, free to fail over or kill, and every process of it is stopped by PID
when the test ends, however it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.jobs.worker_processes import Workers
from tests.processes import ManagedProcesses

from .deployment import SentinelDeployment


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[SentinelDeployment]:
    """Return a running deployment whose sentinels know the master, the replica and each other."""
    started = SentinelDeployment(tmp_path / "redis")
    try:
        await started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture
def workers(deployment: SentinelDeployment, tmp_path: Path) -> Iterator[Workers]:
    """Start worker processes that reach Redis through the deployment's sentinels; stopped at the end."""
    processes = ManagedProcesses(tmp_path)
    try:
        yield Workers(deployment.url(), processes)
    finally:
        processes.stop_all()
