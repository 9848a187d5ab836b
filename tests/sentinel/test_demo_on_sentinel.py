"""The demo's processes on Sentinel: ``REDIS_URL=redis+sentinel://...`` is all a worker and the API need.

The API builds its mediator with `build_mediator` from the same settings, which the test does too.
"""

from __future__ import annotations

from pathlib import Path

from services.demo.handlers import build_mediator
from services.demo.messages import Cleanup
from services.settings import Settings
from services.stack import without_password

from tests.processes import ManagedProcesses
from tests.services.service_processes import worker_environment

from .deployment import SentinelDeployment


async def test_a_demo_worker_runs_jobs_through_sentinel(
    deployment: SentinelDeployment, tmp_path: Path
) -> None:
    """A ``general`` worker on a Sentinel ``REDIS_URL`` runs a job the demo mediator enqueued there."""
    settings = Settings(
        redis_url=deployment.url(1),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'demo.sqlite3'}",
        work_scale=0.01,
    )
    processes = ManagedProcesses(tmp_path)
    try:
        worker = processes.start(
            "worker-general", ["-m", "services.worker", "general"], worker_environment(settings)
        )
        async with build_mediator(settings) as mediator:
            handle = await mediator.enqueue(Cleanup(older_than_days=1))
            try:
                outcome = await handle.result(timeout=30)
            except TimeoutError as error:
                raise AssertionError(worker.output()) from error
        assert outcome.emails_removed == 0
    finally:
        processes.stop_all()


def test_the_stack_hides_both_passwords_of_a_sentinel_url() -> None:
    """What the stack prints of a Sentinel URL shows neither the master's nor the sentinels' password."""
    shown = without_password("redis+sentinel://app:secret@h1:26379,h2:26379/jobs/0?sentinel_password=hush")
    assert shown == "redis+sentinel://app:***@h1:26379,h2:26379/jobs/0?sentinel_password=***"
