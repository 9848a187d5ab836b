"""Redis and PostgreSQL from containers, through testcontainers, when none is configured or answers.

The test runs part of the real suite in a pytest of its own with REDIS_URL and DATABASE_URL unset and
``ARQM_TEST_CONTAINERS=always``, which takes the path a machine without those servers takes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests import containers
from tests.processes import ROOT

if (unavailable := containers.unavailable_reason()) is not None:
    pytest.skip(f"containers unavailable: {unavailable}", allow_module_level=True)

# A Redis-only module and one that needs PostgreSQL and Redis both.
SUITE_PART = ("tests/jobs/test_enqueue.py", "tests/services/test_api.py")
SUITE_TIMEOUT = 600.0  # a cold machine builds the stand-in images first


def test_the_suite_runs_on_redis_and_postgresql_containers_when_none_is_configured() -> None:
    """With no REDIS_URL or DATABASE_URL, the session starts both in containers, uses and removes them."""
    environment = {
        name: value for name, value in os.environ.items() if name not in {"REDIS_URL", "DATABASE_URL"}
    }
    environment[containers.FORCE] = "always"
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", *SUITE_PART],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    started = dict(re.findall(r"started (Redis|PostgreSQL) container ([0-9a-f]{12}) at ", output))
    assert set(started) == {"Redis", "PostgreSQL"}, output
    assert re.search(r"\b\d+ passed\b", output), output
    for container_id in started.values():  # removed when the session ended
        with pytest.raises(containers.ContainerError):
            containers.docker("container", "inspect", container_id)
