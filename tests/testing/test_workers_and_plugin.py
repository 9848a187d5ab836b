"""Real workers under test, `drain`'s timeout, the opt-in pytest plugin, and imports that stay light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arq_mediator import Mediator, Request
from arq_mediator.testing import drain, running_worker
from arq_mediator.testing.pytest import LocalQueueFactory, WorkerFactory


class Ping(Request[str]):
    text: str


async def test_running_worker_opens_the_mediator_and_serves_the_handlers_queues(redis_url: str) -> None:
    """Without queues it serves every queue the handlers name, opening the mediator for the block."""
    mediator = Mediator(redis=redis_url)

    @mediator.handler(queue="pings")
    async def ping(request: Ping) -> str:
        return request.text.upper()

    async with running_worker(mediator) as worker:
        assert list(worker.settings.queues) == ["pings"]
        job = await mediator.enqueue(Ping(text="hi"))
        await drain(mediator)
        assert await job.result(timeout=5) == "HI"
    with pytest.raises(Exception, match="no Redis connection"):
        await mediator.enqueue(Ping(text="closed"))


async def test_drain_times_out_naming_what_is_left(redis_url: str) -> None:
    """drain with no worker for a queue raises TimeoutError counting its jobs and listing live workers."""

    async with Mediator(redis=redis_url) as mediator:

        @mediator.handler(queue="nobody")
        async def ping(request: Ping) -> str:
            return request.text

        await mediator.enqueue(Ping(text="stuck"))
        left = r"nobody: 1 ready, 0 running, 0 deferred\. Live workers: none"
        with pytest.raises(TimeoutError, match=left):
            await drain(mediator, timeout=0.05)


PLUGIN_TEST = """
import pytest

from arq_mediator import Mediator, Request


class Ping(Request[str]):
    text: str


@pytest.mark.asyncio
async def test_local(local_queue_for):
    mediator = Mediator()

    @mediator.handler
    async def ping(request: Ping) -> str:
        return request.text

    queue = await local_queue_for(mediator)
    job = await mediator.enqueue(Ping(text="local"))
    assert await queue.run_all() == 1
    assert await job.result(timeout=0) == "local"
"""


def test_a_suite_in_strict_asyncio_mode_opts_into_the_plugin(tmp_path: Path) -> None:
    """A suite naming arq_mediator.testing.pytest in pytest_plugins gets its fixtures, in strict mode too."""
    settings = "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    (tmp_path / "pytest.ini").write_text(settings + "filterwarnings = error\n")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["arq_mediator.testing.pytest"]\n')
    (tmp_path / "test_plugin.py").write_text(PLUGIN_TEST)
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "1 passed" in completed.stdout


async def test_the_fixtures_run_a_local_queue_and_a_real_worker(
    local_queue_for: LocalQueueFactory, running_worker_for: WorkerFactory, redis_url: str
) -> None:
    """local_queue_for and running_worker_for open what the test asks for and close it when it ends."""
    local, remote = Mediator(), Mediator(redis=redis_url)
    for mediator in (local, remote):

        @mediator.handler
        async def ping(request: Ping) -> str:
            return request.text

    queue = await local_queue_for(local, retry_delay=0)
    worker = await running_worker_for(remote, ["default"], retry_delay=0, max_jobs=2)
    assert worker.settings.max_jobs == 2
    local_job = await local.enqueue(Ping(text="local"))
    remote_job = await remote.enqueue(Ping(text="remote"))
    assert await queue.run_all() == 1
    assert await local_job.result(timeout=0) == "local"
    assert await remote_job.result(timeout=5) == "remote"


def test_importing_the_library_and_the_helper_imports_no_pytest() -> None:
    """`import arq_mediator` and `import arq_mediator.testing` leave pytest unimported."""
    code = "import sys, arq_mediator, arq_mediator.testing; print('pytest' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert completed.stdout.strip() == "False"
