"""An OpenTelemetry SDK for the telemetry tests: spans and metrics kept in memory, read back per test.

The global providers can be set only once per process. The SDK is set by a session-scoped fixture that only
the tests in this directory request (through the autouse fixture below), and only when no real provider is
set yet; a real SDK provider already in place gets our processor and reader added instead. The library took
its tracer and meter at import through the API's proxies, which delegate to whatever provider is set later.
Inline routes are traced or not when they are built, so tests build their mediators after this runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ..jobs.conftest import mediator as mediator
from ..jobs.conftest import probe as probe
from ..jobs.waiting import eventually

# Deltas: each collection holds only what was recorded since the previous one, so a test that drains the
# reader first sees its own measurements alone (gauges still report their current value).
DELTA: dict[type, AggregationTemporality] = dict.fromkeys(
    (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge),
    AggregationTemporality.DELTA,
)


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Where the spans and metrics recorded through the global providers end up."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self, name: str | None = None, kind: SpanKind | None = None) -> list[ReadableSpan]:
        """Return the finished spans, in the order they ended, optionally only those of *name* and *kind*."""
        return [
            span
            for span in self.exporter.get_finished_spans()
            if (name is None or span.name == name) and (kind is None or span.kind == kind)
        ]

    async def wait_for_spans(
        self,
        count: int,
        name: str | None = None,
        kind: SpanKind | None = None,
        *,
        where: Callable[[ReadableSpan], bool] = lambda span: True,
        timeout: float = 5.0,
    ) -> list[ReadableSpan]:
        """Wait until *count* finished spans match and return them (a job's span ends after its result)."""

        def matching() -> list[ReadableSpan]:
            return [span for span in self.spans(name, kind) if where(span)]

        await eventually(lambda: len(matching()) >= count, timeout, what=f"{count} span(s) {name} {kind}")
        found = matching()
        assert len(found) == count, found
        return found

    def collect(self) -> MetricsData:
        """Collect the metrics recorded since the last collection (none at all reads as no resource)."""
        return self.reader.get_metrics_data() or MetricsData(resource_metrics=[])


def points(data: MetricsData, name: str) -> list[Any]:
    """Return the data points of metric *name* in *data*, from every scope."""
    return [
        point
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def parent_id(span: ReadableSpan) -> int | None:
    """Return the span id of *span*'s parent, or None for a root span."""
    return None if span.parent is None else span.parent.span_id


def ids(span: ReadableSpan) -> tuple[int, int]:
    """Return (trace id, span id) of *span*."""
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def assert_child(child: ReadableSpan, parent: ReadableSpan | trace.Span) -> None:
    """Assert *child* belongs to *parent*'s trace and has it as its direct parent."""
    parent_context = parent.get_span_context()
    assert parent_context is not None
    assert child.context is not None
    assert child.context.trace_id == parent_context.trace_id
    assert parent_id(child) == parent_context.span_id


def attribute(span: ReadableSpan, key: str) -> Any:
    """Return attribute *key* of *span* (None when absent)."""
    assert span.attributes is not None
    return span.attributes.get(key)


def by_attribute(spans: Sequence[ReadableSpan], key: str) -> dict[Any, ReadableSpan]:
    """Index *spans* by attribute *key*, which must be unique among them."""
    indexed = {attribute(span, key): span for span in spans}
    assert len(indexed) == len(spans), spans
    return indexed


@pytest.fixture(scope="session")
def telemetry_sdk() -> Telemetry:
    """Install the SDK once for the session: an in-memory span exporter and an in-memory metric reader."""
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader(preferred_temporality=DELTA)

    tracer_provider = trace.get_tracer_provider()
    if isinstance(tracer_provider, TracerProvider):  # a real SDK is set already: join it
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif isinstance(tracer_provider, trace.ProxyTracerProvider):  # nothing set yet
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
    else:
        pytest.fail(f"a tracer provider other than the SDK's is set: {tracer_provider!r}")
    assert trace.get_tracer_provider() is tracer_provider

    meter_provider = metrics.get_meter_provider()
    if isinstance(meter_provider, MeterProvider):
        meter_provider.add_metric_reader(reader)
    elif type(meter_provider).__name__ == "_ProxyMeterProvider":  # the API's default: nothing set yet
        meter_provider = MeterProvider(metric_readers=[reader])
        metrics.set_meter_provider(meter_provider)
    else:
        pytest.fail(f"a meter provider other than the SDK's is set: {meter_provider!r}")
    assert metrics.get_meter_provider() is meter_provider
    return Telemetry(exporter=exporter, reader=reader)


@pytest.fixture(autouse=True)
def telemetry(telemetry_sdk: Telemetry) -> Iterator[Telemetry]:
    """Give each test an empty span exporter and a drained metric reader."""
    telemetry_sdk.exporter.clear()
    telemetry_sdk.collect()
    yield telemetry_sdk
    telemetry_sdk.exporter.clear()
