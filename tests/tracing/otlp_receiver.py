"""A small OTLP/HTTP receiver for the tests: what a collector would get, parsed into plain dataclasses.

It listens on 127.0.0.1 (a free port), takes ``POST /v1/traces`` and ``/v1/metrics`` as protobuf (plain,
gzip or deflate), answers each with an empty export response, and keeps what it parsed. ``/v1/logs`` is
accepted and dropped. ``GET /received`` answers what it kept, as JSON.

Run as a script (``python otlp_receiver.py --host 0.0.0.0 --port 4318``) it serves until SIGTERM: the
stand-in for the OpenTelemetry Collector in the container tests (``tests/standins/otlp``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gzip
import json
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span as exported: ids in hex, kind and status as their proto enum names."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # SPAN_KIND_SERVER, SPAN_KIND_PRODUCER, ...
    service: str  # service.name of the exporting resource
    attributes: dict[str, Any]
    status: str  # STATUS_CODE_UNSET, STATUS_CODE_OK or STATUS_CODE_ERROR
    events: tuple[str, ...]
    start_ns: int
    end_ns: int

    def describe(self) -> str:
        """Return a one-line summary, for failure messages."""
        parent = self.parent_span_id or "-"
        return f"{self.service}: {self.name} [{self.kind}] {self.span_id} <- {parent} ({self.status})"


def plain(value: AnyValue) -> Any:
    """Return *value* as a plain Python value (lists for arrays, dicts for key-value lists)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [plain(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, which)


def attributes_of(pairs: Any) -> dict[str, Any]:
    """Return repeated `KeyValue`s as a dict of plain values."""
    found: dict[str, Any] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        found[pair.key] = plain(pair.value)
    return found


def _span(span: ProtoSpan, service: str) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        kind=ProtoSpan.SpanKind.Name(span.kind),
        service=service,
        attributes=attributes_of(span.attributes),
        status=ProtoStatus.StatusCode.Name(span.status.code),
        events=tuple(event.name for event in span.events),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
    )


def parse_traces(body: bytes) -> list[ReceivedSpan]:
    """Return the spans of a protobuf `ExportTraceServiceRequest`."""
    request = ExportTraceServiceRequest.FromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        service = str(attributes_of(resource_spans.resource.attributes).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            spans.extend(_span(span, service) for span in scope_spans.spans)
    return spans


def parse_metric_names(body: bytes) -> list[tuple[str, str]]:
    """Return (service.name, metric name) of every metric in a protobuf `ExportMetricsServiceRequest`."""
    request = ExportMetricsServiceRequest.FromString(body)
    return [
        (str(attributes_of(resource_metrics.resource.attributes).get("service.name", "")), metric.name)
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    ]


def decompress(body: bytes, encoding: str) -> bytes:
    """Undo the request's Content-Encoding (none, gzip or deflate)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


@dataclass
class Collected:
    """What the receiver has parsed so far, behind a lock: it fills from the server's threads."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    metrics: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    encodings: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path != "/received":
            self.send_error(404, "only GET /received")
            return
        collected = self.server.collected
        with collected.lock:
            received = {
                "spans": [dataclasses.asdict(span) for span in collected.spans],
                "metrics": collected.metrics,
                "errors": collected.errors,
            }
        answer = json.dumps(received).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        collected = self.server.collected
        encoding = self.headers.get("Content-Encoding", "")
        with collected.lock:
            collected.encodings.add(encoding or "identity")
        try:
            data = decompress(body, encoding)
            if self.path == "/v1/traces":
                spans = parse_traces(data)
                with collected.lock:
                    collected.spans.extend(spans)
                answer = ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                names = parse_metric_names(data)
                with collected.lock:
                    collected.metrics.extend(names)
                answer = ExportMetricsServiceResponse().SerializeToString()
            elif self.path == "/v1/logs":
                answer = ExportLogsServiceResponse().SerializeToString()
            else:
                self.send_error(404, f"no OTLP signal at {self.path}")
                return
        except Exception as error:  # whatever the parse raised: a 400 here, and in the test's report
            with collected.lock:
                collected.errors.append(f"{self.path}: {type(error).__name__}: {error}")
            self.send_error(400, str(error))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet: one line per export is noise."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    collected: Collected


class OtlpReceiver:
    """An OTLP/HTTP endpoint in a background thread; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.collected = Collected()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp receiver"
        )

    @property
    def endpoint(self) -> str:
        """Return the base URL the exporters append ``/v1/traces`` and ``/v1/metrics`` to."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving, wait for the thread and release the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10.0)
        self._server.server_close()

    def spans(self) -> list[ReceivedSpan]:
        """Return a copy of every span received so far."""
        collected = self._server.collected
        with collected.lock:
            return list(collected.spans)

    def metric_names(self) -> list[tuple[str, str]]:
        """Return (service.name, metric name) of every metric data set received so far."""
        collected = self._server.collected
        with collected.lock:
            return list(collected.metrics)

    def encodings(self) -> set[str]:
        """Return every Content-Encoding the exports came in ("identity" for none)."""
        collected = self._server.collected
        with collected.lock:
            return set(collected.encodings)

    def errors(self) -> list[str]:
        """Return why each export the receiver could not parse was refused."""
        collected = self._server.collected
        with collected.lock:
            return list(collected.errors)

    async def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], T | None],
        timeout: float,
        *,
        what: str = "",
        interval: float = 0.05,
    ) -> T:
        """Poll the spans received until *predicate* returns something other than ``None`` or ``False``.

        Returns:
            What *predicate* returned.

        Raises:
            AssertionError: the deadline passed first; the message lists the spans received.
        """
        return await self._poll(self.spans, predicate, timeout, what, interval)

    async def wait_for_metrics(
        self,
        predicate: Callable[[list[tuple[str, str]]], T | None],
        timeout: float,
        *,
        what: str = "",
        interval: float = 0.05,
    ) -> T:
        """Poll the (service.name, metric name) pairs received, as `wait_for` polls the spans."""
        return await self._poll(self.metric_names, predicate, timeout, what, interval)

    async def _poll(
        self,
        fetch: Callable[[], list[Any]],
        predicate: Callable[[Any], T | None],
        timeout: float,
        what: str,
        interval: float,
    ) -> T:
        deadline = time.monotonic() + timeout
        while True:
            found = predicate(fetch())
            if found is not None and found is not False:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"not received within {timeout}s: {what or predicate!r}\n{self.report()}"
                )
            await asyncio.sleep(interval)

    def report(self) -> str:
        """Describe everything received so far (and every refused export), for failure messages."""
        spans = "\n".join(span.describe() for span in sorted(self.spans(), key=lambda span: span.start_ns))
        metrics = ", ".join(sorted({f"{service}: {name}" for service, name in self.metric_names()}))
        refused = "".join(f"\nrefused export: {error}" for error in self.errors())
        encodings = ", ".join(sorted(self.encodings())) or "(none)"
        return (
            f"spans received:\n{spans or '(none)'}\nmetrics received: {metrics or '(none)'}\n"
            f"content encodings: {encodings}{refused}"
        )


@contextmanager
def running_receiver() -> Iterator[OtlpReceiver]:
    """Run a receiver for the duration of the block; it is closed however the block ends."""
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.close()


def span_from_json(fields: dict[str, Any]) -> ReceivedSpan:
    """Return a span from its ``GET /received`` form."""
    return ReceivedSpan(**{**fields, "events": tuple(fields["events"])})


def serve() -> None:
    """Serve at the command line's --host and --port until SIGTERM or SIGINT; ignore other arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    options, _ = parser.parse_known_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    receiver = OtlpReceiver(options.host, options.port)
    receiver.start()
    print(f"OTLP/HTTP receiver listening on {receiver.endpoint}", flush=True)
    stop.wait()
    receiver.close()


if __name__ == "__main__":
    serve()
