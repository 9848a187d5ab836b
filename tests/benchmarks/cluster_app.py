"""Worker app of `bench_cluster.py`: a no-op request per queue, the queues in slots of three masters.

``high``, ``mid`` and ``low`` hash to slots of the three masters of a three-master cluster (see
`tests.cluster.app`); on a one-node cluster all three are on the one node. Each worker process loads
``tests.benchmarks.cluster_app:mediator`` with the cluster URL in `URL_ENV`.
"""

from __future__ import annotations

import os
from typing import ClassVar

from arq_mediator import Mediator, Request

URL_ENV = "ARQM_BENCH_CLUSTER_URL"
QUEUES = ("high", "mid", "low")


class Noop(Request[None]):
    """Do nothing, on the request type's queue."""

    message_name: ClassVar[str] = "bench_cluster.Noop"


class NoopHigh(Noop):
    """A no-op on ``high``."""

    message_name: ClassVar[str] = "bench_cluster.NoopHigh"


class NoopMid(Noop):
    """A no-op on ``mid``."""

    message_name: ClassVar[str] = "bench_cluster.NoopMid"


class NoopLow(Noop):
    """A no-op on ``low``."""

    message_name: ClassVar[str] = "bench_cluster.NoopLow"


REQUESTS: dict[str, type[Noop]] = {"high": NoopHigh, "mid": NoopMid, "low": NoopLow}


async def handle_high(request: NoopHigh) -> None:
    """Do nothing on ``high``."""


async def handle_mid(request: NoopMid) -> None:
    """Do nothing on ``mid``."""


async def handle_low(request: NoopLow) -> None:
    """Do nothing on ``low``."""


def build(url: str | None) -> Mediator:
    """Return a mediator on *url* handling the three no-ops, each on its queue."""
    mediator = Mediator(redis=url)
    mediator.handler(queue="high")(handle_high)
    mediator.handler(queue="mid")(handle_mid)
    mediator.handler(queue="low")(handle_low)
    return mediator


mediator = build(os.environ.get(URL_ENV))
