"""An app for the cluster tests: one request type per queue, the three queues in slots of three masters.

``high``, ``mid`` and ``low`` hash to slots the three masters of `ClusterDeployment` serve (0-5460,
5461-10922, 10923-16383: ``mid`` 1194, ``high`` 9976, ``low`` 15214). A worker process loads it with
``python -m arq_mediator worker tests.cluster.app:mediator`` and reads the cluster URL from `URL_ENV`.
"""

from __future__ import annotations

import asyncio
import os
from typing import ClassVar

from arq_mediator import Backoff, Context, Mediator, Request

URL_ENV = "ARQM_TEST_CLUSTER_URL"
QUEUES = ("high", "mid", "low")
# What the handlers of this process started, in order: ``<queue>:<tag>``.
STARTED: list[str] = []


class Step(Request[str]):
    """Answer ``<tag>@<worker>`` after *duration* seconds."""

    message_name: ClassVar[str] = "cluster_app.Step"
    tag: str = ""
    duration: float = 0.0


class High(Step):
    """A step on ``high``."""

    message_name: ClassVar[str] = "cluster_app.High"


class Mid(Step):
    """A step on ``mid``."""

    message_name: ClassVar[str] = "cluster_app.Mid"


class Low(Step):
    """A step on ``low``."""

    message_name: ClassVar[str] = "cluster_app.Low"


class Flaky(Step):
    """A step on ``mid`` that fails its first try."""

    message_name: ClassVar[str] = "cluster_app.Flaky"


async def _step(request: Step, ctx: Context) -> str:
    assert ctx.job is not None
    STARTED.append(f"{ctx.job.queue}:{request.tag}")
    await asyncio.sleep(request.duration)
    return f"{request.tag}@{ctx.job.worker}"


async def handle_high(request: High, ctx: Context) -> str:
    """Run a `High` step."""
    return await _step(request, ctx)


async def handle_mid(request: Mid, ctx: Context) -> str:
    """Run a `Mid` step."""
    return await _step(request, ctx)


async def handle_low(request: Low, ctx: Context) -> str:
    """Run a `Low` step."""
    return await _step(request, ctx)


async def handle_flaky(request: Flaky, ctx: Context) -> str:
    """Fail the first try of a `Flaky` step, run the second."""
    assert ctx.job is not None
    if ctx.job.try_number == 1:
        raise RuntimeError("first try fails")
    return await _step(request, ctx)


def build(url: str | None) -> Mediator:
    """Return a mediator on *url* with this module's handlers."""
    mediator = Mediator(redis=url)
    mediator.handler(queue="high")(handle_high)
    mediator.handler(queue="mid")(handle_mid)
    mediator.handler(queue="low")(handle_low)
    mediator.handler(queue="mid", max_tries=2, backoff=Backoff(initial=0.05, jitter=0.0))(handle_flaky)
    return mediator


mediator = build(os.environ.get(URL_ENV))
