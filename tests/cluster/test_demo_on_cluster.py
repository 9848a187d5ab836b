"""The demo on Redis Cluster: ``REDIS_URL=redis+cluster://...`` is all a demo worker and the API need."""

from __future__ import annotations

from pathlib import Path

from services.demo.handlers import build_mediator
from services.demo.messages import Cleanup
from services.settings import Settings

from tests.processes import ManagedProcesses
from tests.services.service_processes import worker_environment

from .deployment import ClusterDeployment


async def test_a_demo_worker_runs_jobs_on_the_cluster(
    cluster: ClusterDeployment, processes: ManagedProcesses, tmp_path: Path
) -> None:
    """A ``general`` worker on a cluster ``REDIS_URL`` runs a job the demo mediator enqueued there."""
    await cluster.flush()
    settings = Settings(
        redis_url=cluster.url(),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'demo.sqlite3'}",
        work_scale=0.01,
    )
    worker = processes.start(
        "worker-general", ["-m", "services.worker", "general"], worker_environment(settings)
    )
    async with build_mediator(settings) as mediator:
        handle = await mediator.enqueue(Cleanup(older_than_days=1))
        assert handle.id.startswith("{cleanup}")
        try:
            outcome = await handle.result(timeout=30)
        except TimeoutError as error:
            raise AssertionError(worker.output()) from error
    assert outcome.emails_removed == 0
