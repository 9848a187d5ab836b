"""The demo on Sentinel: ``REDIS_URL=redis+sentinel://...`` is all a worker and the API need, and the
compose profile's sentinel.conf runs in a real sentinel.

The API builds its mediator with `build_mediator` from the same settings, which the test does too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from services.demo.handlers import build_mediator
from services.demo.messages import Cleanup
from services.settings import Settings
from services.stack import without_password

from tests.conftest import StartRedisServer
from tests.deploy.files import SENTINEL_FILE
from tests.deploy.test_compose import sentinel_monitor
from tests.jobs.worker_processes import wait_until
from tests.processes import ManagedProcesses, free_port
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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "redis+sentinel://app:secret@h1:26379,h2:26379/jobs/0?sentinel_password=hush",
            "redis+sentinel://app:***@h1:26379,h2:26379/jobs/0?sentinel_password=***",
        ),
        (
            "redis+sentinel://h1/jobs?sentinel_username=w&sentinel_password=hush",
            "redis+sentinel://h1/jobs?sentinel_username=w&sentinel_password=***",
        ),
        ("postgresql+asyncpg://postgres:pw@db:5432/demo", "postgresql+asyncpg://postgres:***@db:5432/demo"),
        ("sqlite+aiosqlite:////tmp/demo.sqlite3", "sqlite+aiosqlite:////tmp/demo.sqlite3"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_what_the_stack_prints_of_a_url_hides_every_password(url: str, shown: str) -> None:
    """The master's and the sentinels' passwords are hidden; a URL without one is printed as it is."""
    assert without_password(url) == shown


async def test_the_compose_sentinel_config_loads_in_a_real_sentinel(
    redis_servers: StartRedisServer, tmp_path: Path
) -> None:
    """sentinel.conf, its master and port moved to loopback ones, starts a sentinel watching that master."""
    master = await redis_servers()
    _, _, _, quorum = sentinel_monitor()
    port = free_port()
    config = SENTINEL_FILE.read_text(encoding="utf-8").replace("port 26379", f"port {port}")
    config = config.replace("monitor demo redis 6379", f"monitor demo 127.0.0.1 {master.port}")
    assert str(master.port) in config, "sentinel.conf no longer monitors `demo redis 6379`"
    (tmp_path / "sentinel.conf").write_text(config, encoding="utf-8")
    processes = ManagedProcesses(tmp_path)
    sentinel: Redis = Redis(port=port, decode_responses=True)
    try:
        started = processes.start_program(
            "sentinel", ["redis-server", str(tmp_path / "sentinel.conf"), "--sentinel"], os.environ
        )

        async def watching() -> dict[str, Any]:
            try:
                state: dict[str, Any] = await sentinel.sentinel_master("demo")  # type: ignore[no-untyped-call]
            except (RedisError, OSError):
                return {}
            return state

        state = await wait_until(watching, "the sentinel to watch the master", diagnose=started.output)
        assert (int(state["port"]), int(state["quorum"])) == (master.port, quorum)
        assert int(state["down-after-milliseconds"]) == 5000
    finally:
        await sentinel.aclose()
        processes.stop_all()
