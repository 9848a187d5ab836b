"""OpenTelemetry SDK set-up for the services, from the standard environment.

The library uses only the OpenTelemetry API; this is where the services choose to export. Nothing is set
up unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, so a
process without a collector runs on the API's no-op providers and pays nothing for tracing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine

from arq_mediator import TraceContextFilter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s]: %(message)s"
SUPPORTED_PROTOCOL = "http/protobuf"


class TelemetryConfigurationError(ValueError):
    """The OpenTelemetry environment asks for something these services cannot do; the message says what."""


@dataclass(frozen=True, slots=True)
class Telemetry:
    """The SDK providers this process exports through; `shutdown` flushes what is still buffered."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def shutdown(self) -> None:
        """Export the last spans and metrics and stop exporting (call once, on the way out)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


_configured: Telemetry | None = None


def configure_telemetry(service_name: str, environ: Mapping[str, str] = os.environ) -> Telemetry | None:
    """Export traces and metrics over OTLP/HTTP as *service_name*, when the environment names an endpoint.

    The exporters read the standard variables themselves (``OTEL_EXPORTER_OTLP_ENDPOINT`` and friends; the
    HTTP exporter appends ``/v1/traces`` and ``/v1/metrics``). Configures at most once per process.

    Returns:
        The providers, or ``None`` when no endpoint is set (then nothing is exported).

    Raises:
        TelemetryConfigurationError: ``OTEL_EXPORTER_OTLP_PROTOCOL`` asks for gRPC, whose exporter these
            services do not ship.
    """
    global _configured
    if _configured is not None:
        return _configured
    if not (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", SUPPORTED_PROTOCOL)
    if protocol != SUPPORTED_PROTOCOL:
        raise TelemetryConfigurationError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported here; use {SUPPORTED_PROTOCOL!r} "
            "(the collector's port 4318)"
        )
    resource = Resource.create({SERVICE_NAME: service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    metrics.set_meter_provider(meter_provider)
    _configured = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return _configured


def correlate_logs(root: logging.Logger | None = None) -> None:
    """Put ``trace_id`` and ``span_id`` on every record the root logger's handlers write, in their format."""
    root = root or logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    for handler in root.handlers:
        if not any(isinstance(existing, TraceContextFilter) for existing in handler.filters):
            handler.addFilter(TraceContextFilter())
        handler.setFormatter(logging.Formatter(LOG_FORMAT))


def instrument_engine(engine: AsyncEngine) -> None:
    """Trace *engine*'s queries (spans under the handler that ran them) when an SDK is set."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        # Imported here: without an SDK the instrumentation is never loaded.
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # skip_dep_check: the instrumentation's declared range stops below SQLAlchemy 2.1, which it
        # traces correctly (tests/tracing shows the query spans under their handlers).
        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)
