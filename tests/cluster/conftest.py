"""A Redis Cluster per test module (three masters, a replica each), emptied before each test.

Starting one takes seconds, so the tests of a module share it; a test that kills or fails over a node
uses a deployment of its own (`fresh_cluster`). Every node is stopped by its PID at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from arq_mediator import Mediator

from .app import build
from .deployment import ClusterDeployment, unavailable_reason

_REASON = unavailable_reason()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip every test that needs a running cluster, saying why, where none can be started."""
    if _REASON is None:
        return
    skip = pytest.mark.skip(reason=_REASON)
    for item in items:
        needs = {"cluster", "fresh_cluster", "partial_cluster"} & set(getattr(item, "fixturenames", ()))
        if needs and "tests/cluster/" in str(item.path).replace("\\", "/"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    """Return a running cluster shared by the module's tests."""
    deployment = ClusterDeployment(tmp_path_factory.mktemp("cluster"))
    try:
        asyncio.run(deployment.start())
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
async def fresh_cluster(tmp_path: Path) -> AsyncIterator[ClusterDeployment]:
    """Return a running cluster of the test's own, free to lose a node."""
    deployment = ClusterDeployment(tmp_path / "cluster")
    try:
        await deployment.start()
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
async def partial_cluster(tmp_path: Path) -> AsyncIterator[ClusterDeployment]:
    """Return a cluster of the test's own, three masters without replicas, where a master that is down
    takes only its own slots out of service (the others go on serving theirs)."""
    deployment = ClusterDeployment(tmp_path / "cluster", replicas=0, full_coverage=False)
    try:
        await deployment.start()
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
async def app(cluster: ClusterDeployment) -> AsyncIterator[Mediator]:
    """Return an open mediator of `tests.cluster.app` on the emptied shared cluster."""
    await cluster.flush()
    async with build(cluster.url()) as mediator:
        yield mediator
