"""The master SIGKILLed under a steady producer and two worker processes: jobs flow again, nothing dies.

The replica lags when the master dies (see `failover`): without a durable enqueue, what the master
acknowledged in its last moments is lost with it, as Redis replicates asynchronously; with one, nothing
acknowledged may be lost.
"""

from __future__ import annotations

import pytest

from arq_mediator import Durability
from tests.faults.conftest import stays_up
from tests.jobs.process_app import build
from tests.jobs.worker_processes import Workers, wait_for_workers

from .deployment import SentinelDeployment
from .failover import kill_master_under_load

WORKERS = ("one", "two")


@pytest.mark.parametrize("durable", [False, True], ids=["acknowledged-by-master", "durable"])
async def test_a_killed_master_fails_over_and_every_component_carries_on(
    deployment: SentinelDeployment, workers: Workers, durable: bool
) -> None:
    """Jobs enqueued after the kill finish, workers survive, and a durable enqueue loses nothing."""
    started = [workers.start(name, ["default"], max_jobs=8, lease=3.0, heartbeat=0.3) for name in WORKERS]
    async with build(deployment.url()) as mediator:
        mediator.durable_enqueue = Durability(replicas=1, timeout=0.5) if durable else None
        await wait_for_workers(mediator, *WORKERS, diagnose=workers.logs)

        figures = await kill_master_under_load(mediator, deployment)

        print(f"\nfailover ({'durable' if durable else 'acknowledged by the master'}): {figures}")
        assert figures.acknowledged > 75, figures  # the producer carried on after the failover
        if durable:
            assert figures.lost == [], f"durable enqueues lost in the failover: {figures}"
            assert figures.not_replicated >= 1, figures  # refused while the replica lagged, not lost
        else:
            assert figures.lost, f"the lagging replica should have missed acknowledged enqueues: {figures}"
        await stays_up(*started, seconds=0.5)
        await wait_for_workers(mediator, *WORKERS, diagnose=workers.logs)  # both beat on the new master
