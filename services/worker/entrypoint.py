"""Start one worker process of the demo: read its profile and overrides, say what it is, run until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from arq_mediator import Mediator, Worker
from arq_mediator.outbox import Outbox, OutboxRelay
from services.demo.handlers import build_mediator
from services.settings import Settings
from services.telemetry import configure_telemetry, correlate_logs
from services.worker.profiles import PROFILES, ConfigurationError, WorkerConfig, configure

if TYPE_CHECKING:
    from services.worker.health import HealthServer

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_ENVIRONMENT = """\
environment:
  WORKER_PROFILE        the profile, when none is given as an argument
  WORKER_NAME           overrides the profile's worker name
  MAX_CONCURRENT_JOBS   overrides its concurrency cap (1-1000)
  WORKER_QUEUES         overrides its queues: comma-separated, highest priority first
  WORKER_HTTP_PORT      serves GET /health and GET /worker-info on this port
  WORKER_HTTP_HOST      the address the health server listens on (default 0.0.0.0)
  REDIS_URL, DATABASE_URL, WORK_SCALE, EMAIL_FAILURE_RATE, OTEL_SERVICE_NAME, LOG_LEVEL (default INFO)
"""


class HealthServerFailed(RuntimeError):
    """The health server could not start; the worker stops with it."""


def parse(arguments: Sequence[str]) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m services.worker",
        description="Run a worker of the distributed demo until SIGTERM or Ctrl-C.",
        epilog=_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("profile", nargs="?", help=f"one of {', '.join(PROFILES)} (or set WORKER_PROFILE)")
    return parser.parse_args(arguments)


async def _serve_http(server: HealthServer, worker: Worker, address: str) -> None:
    try:
        await server.serve()
    except SystemExit:  # how uvicorn gives up when it cannot listen; its log line says why
        worker.stop()
        raise HealthServerFailed(f"the health server cannot listen on {address}") from None


async def serve(config: WorkerConfig, settings: Settings) -> Worker:
    """Run the worker of *config* until SIGTERM or SIGINT, with its health server when it has a port.

    This is `arq_mediator.run_worker` with two differences: the health server needs the `Worker` itself
    (``/worker-info`` reads its live counters), and the signal handlers stay in place while the mediator
    opens and closes, not only while the worker runs. In the local stack a Ctrl-C reaches each worker
    and the stack, which then sends SIGTERM too; that second signal must not kill a worker that is
    closing its connections.

    Returns:
        The stopped worker, with its counters.

    Raises:
        HealthServerFailed: the health server could not start.
    """
    telemetry = configure_telemetry(settings.service_name)
    if telemetry is not None:
        correlate_logs()
    mediator = build_mediator(settings)
    # Every worker relays the outbox (new users' fan-out): relays share the table safely, and one that
    # crashes leaves its rows to the others.
    worker = Worker(mediator, config.worker_settings(relay=OutboxRelay(mediator.resources[Outbox])))
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, worker.stop)
    try:
        async with mediator:
            if config.http_port is None:
                await worker.run()
            else:
                await _run_with_health_server(worker, mediator, config, settings.service_name)
    finally:
        if telemetry is not None:  # the last jobs' spans leave with the process, not after it
            telemetry.shutdown()
    return worker


async def _run_with_health_server(
    worker: Worker, mediator: Mediator, config: WorkerConfig, service_name: str
) -> None:
    # Imported here: a worker without a port needs neither Litestar nor uvicorn.
    from services.worker.health import create_health_app, health_server

    assert config.http_port is not None
    app = create_health_app(worker, mediator, service_name)
    server = health_server(app, config.http_host, config.http_port)
    address = f"{config.http_host}:{config.http_port}"
    serving = asyncio.create_task(_serve_http(server, worker, address), name="health server")
    try:
        await worker.run()
    finally:
        server.should_exit = True
        await serving


def say(line: str) -> None:
    """Print *line* now: a supervisor reading this process's output must not wait for a buffer to fill."""
    print(line, flush=True)  # noqa: T201


def _stop_before_start(signum: int, frame: FrameType | None) -> None:
    # Until the worker's own handlers are in place, a stop request ends the start-up quietly.
    raise SystemExit(0)


def main(arguments: Sequence[str] | None = None) -> None:
    """Configure and run the worker named on the command line; exit with a message when it cannot run."""
    options = parse(sys.argv[1:] if arguments is None else arguments)
    try:
        config = configure(options.profile, os.environ)
    except ConfigurationError as error:
        sys.exit(f"services.worker: {error}")
    level = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
    if not isinstance(logging.getLevelName(level), int):
        sys.exit(f"services.worker: LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(service_name=f"worker-{config.profile}")
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_before_start)
    say(config.describe())
    if config.http_port is not None:
        base = f"http://{config.http_host}:{config.http_port}"
        say(f"Worker container - API endpoints disabled; health: {base}/health")
        say(f"Worker Info: {base}/worker-info")
    try:
        asyncio.run(serve(config, settings))
        for signum in STOP_SIGNALS:  # stopped for good: a late signal must not turn exit 0 into a kill
            signal.signal(signum, signal.SIG_IGN)
    except HealthServerFailed as error:
        sys.exit(f"services.worker: {config.name} stopped: {error}")
    except (RedisError, SQLAlchemyError, OSError) as error:
        sys.exit(f"services.worker: {config.name} stopped: {type(error).__name__}: {error}")
