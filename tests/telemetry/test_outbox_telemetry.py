"""The outbox keeps the trace (the job's span is a child of the span that wrote its row) and has metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from arq_mediator import Mediator
from arq_mediator.outbox import Outbox, OutboxRelay
from arq_mediator.outbox._relay import backlogs
from tests.outbox import outbox_app
from tests.outbox.conftest import fresh_table
from tests.outbox.outbox_app import QUEUE, Echo
from tests.outbox.test_outbox import relaying, worker_relaying

from ..jobs.waiting import eventually
from .conftest import Telemetry, assert_child, attribute, points


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """Return an engine on a SQLite file of the test's own, with an empty outbox table."""
    async with fresh_table(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}") as engine:
        yield engine


@pytest.fixture
async def app(redis_url: str) -> AsyncIterator[tuple[Mediator, Outbox]]:
    """Return the outbox test app's mediator, open on the test's Redis, built after the SDK was set."""
    mediator, outbox = outbox_app.build(redis_url)
    async with mediator:
        yield mediator, outbox


async def test_a_job_written_to_the_outbox_continues_the_trace_of_the_request_that_wrote_it(
    app: tuple[Mediator, Outbox], sqlite: AsyncEngine, telemetry: Telemetry
) -> None:
    """The PRODUCER span ends when the row is written; the worker's CONSUMER span is its child, same trace."""
    _, outbox = app
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /api/users", kind=SpanKind.SERVER) as request_span:
        async with async_sessionmaker(sqlite)() as session, session.begin():
            handle = await outbox.enqueue(Echo(text="traced"), session=session)
    (producer,) = telemetry.spans(f"send {QUEUE}", SpanKind.PRODUCER)
    assert_child(producer, request_span)
    assert attribute(producer, "arq_mediator.outbox") == outbox_app.TABLE
    async with worker_relaying(app, sqlite):
        (consumer,) = await telemetry.wait_for_spans(1, f"process {QUEUE}", SpanKind.CONSUMER, timeout=20)
    assert_child(consumer, producer)
    assert attribute(consumer, "messaging.message.id") == handle.id


async def test_the_relay_reports_backlog_lag_and_rows_relayed(
    app: tuple[Mediator, Outbox], sqlite: AsyncEngine, telemetry: Telemetry
) -> None:
    """The backlog gauge counts waiting rows; each relayed row records its lag and counts as relayed."""
    _, outbox = app
    async with async_sessionmaker(sqlite)() as session, session.begin():
        await outbox.enqueue_many([Echo(text=str(n)) for n in range(5)], session=session)
    relay = OutboxRelay(outbox, engine=sqlite, poll_interval=0.05)
    await relay._tidy(sqlite)
    assert backlog_of(telemetry.collect()) == 5
    async with relaying(relay):
        await eventually(lambda: relay.relayed == 5, timeout=20, what="the rows relayed")
        await eventually(
            lambda: backlogs[outbox_app.TABLE] == 0, timeout=20, what="the backlog counted again"
        )
    data = telemetry.collect()
    [lag] = points(data, "arq_mediator.outbox.relay_lag")
    assert (lag.count, lag.attributes) == (5, {"messaging.destination.name": QUEUE})
    assert lag.min >= 0
    [relayed] = points(data, "arq_mediator.outbox.relayed")
    assert relayed.value == 5
    [enqueued] = points(data, "arq_mediator.jobs.enqueued")
    assert enqueued.value == 5
    assert backlog_of(data) == 0


def backlog_of(data: MetricsData) -> int:
    """Return the backlog gauge's value for the test table (other tests' relays report other tables)."""
    [backlog] = [
        point
        for point in points(data, "arq_mediator.outbox.backlog")
        if point.attributes == {"arq_mediator.outbox.table": outbox_app.TABLE}
    ]
    return int(backlog.value)
