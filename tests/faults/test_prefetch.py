"""Prefetched jobs under real process faults: a killed worker's buffered jobs are not lost."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable
from typing import Any, cast

import pytest

from arq_mediator import Mediator
from tests.jobs.process_app import (
    FIXED_PREFETCH_ENV,
    Block,
    Chore,
    gate_key,
    runs_key,
    started_key,
    starts_key,
)
from tests.jobs.worker_processes import Workers, results, wait_for_workers, wait_until
from tests.keys import queue_key, running_key

LEASE: dict[str, Any] = {"lease": 1.5, "heartbeat": 0.3}


async def test_a_killed_workers_buffered_jobs_run_once_on_another_worker(
    app: Mediator, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL a worker running one job with three more in its buffer: all four run on the rescuer, the
    buffered ones exactly once, and never on the dead worker."""
    redis = app._jobs.redis
    monkeypatch.setenv(FIXED_PREFETCH_ENV, "3")
    doomed = workers.start("doomed", ["default"], max_jobs=1, **LEASE)
    await wait_for_workers(app, "doomed", diagnose=workers.logs)
    blocked = await app.enqueue(Block(gate="kill"))
    started = started_key(blocked.id)
    await wait_until(lambda: redis.exists(started), "the block to start", diagnose=workers.logs)
    chores = await app.enqueue_many([Chore(tag=f"chore-{n}") for n in range(3)])

    async def all_four_leased() -> bool:
        held: int = await redis.zcard(running_key("default"))
        ready: int = await redis.zcard(queue_key("default"))
        return (held, ready) == (4, 0)

    await wait_until(all_four_leased, "three chores in doomed's buffer", diagnose=workers.logs)
    os.kill(doomed.pid, signal.SIGKILL)
    assert await doomed.exited(timeout=5.0) == -signal.SIGKILL

    monkeypatch.delenv(FIXED_PREFETCH_ENV)
    await redis.set(gate_key("kill"), 1)
    workers.start("rescuer", ["default"], max_jobs=4, **LEASE)
    assert await results(chores, timeout=15, diagnose=workers.logs) == [
        f"chore-{n}@rescuer" for n in range(3)
    ]
    assert await results([blocked], timeout=15, diagnose=workers.logs) == ["kill@rescuer"]
    assert [int(await redis.get(runs_key(handle.id)) or 0) for handle in chores] == [1, 1, 1]
    doomed_ran = await cast("Awaitable[list[bytes]]", redis.lrange(starts_key("doomed"), 0, -1))
    assert doomed_ran == [f"default:{blocked.id}".encode()]
