"""The command line: start a worker for a mediator found by its import path."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence

from ._connection import check_target
from ._mediator import Mediator
from ._worker import run_worker
from ._worker_settings import WorkerSettings


def load_mediator(path: str) -> Mediator:
    """Import ``package.module:attribute`` and return the `Mediator` it names.

    Raises:
        SystemExit: the path is malformed, the module does not import, or the attribute is no Mediator.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"expected package.module:attribute, got {path!r}")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise SystemExit(f"cannot load {path!r}: {error}") from error
    if not isinstance(target, Mediator):
        raise SystemExit(f"{path!r} is a {type(target).__name__}, not an arq_mediator.Mediator")
    return target


def parse(arguments: Sequence[str]) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m arq_mediator", description="Run arq-mediator workers.")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="take jobs from a set of queues until SIGTERM or Ctrl-C")
    worker.add_argument("mediator", help="import path of the Mediator, e.g. myapp.jobs:mediator")
    worker.add_argument(
        "--queues",
        required=True,
        help="comma-separated queue names, highest priority first, e.g. critical,default",
    )
    worker.add_argument("--max-jobs", type=int, default=10, help="jobs running at once, at most (default 10)")
    worker.add_argument("--name", default=None, help="worker name for logs and stats (default host-pid)")
    worker.add_argument(
        "--lease", type=float, default=10.0, help="seconds before a dead worker's jobs return"
    )
    worker.add_argument("--heartbeat", type=float, default=2.0, help="seconds between heartbeats")
    worker.add_argument(
        "--grace", type=float, default=25.0, help="seconds running jobs get to finish on stop"
    )
    worker.add_argument(
        "--idle-check", type=float, default=1.0, help="seconds between claims when no wake-up arrives"
    )
    worker.add_argument(
        "--max-lost", type=int, default=5, help="times a job may lose its worker before it fails as poison"
    )
    worker.add_argument(
        "--unknown-type-delay",
        type=float,
        default=5.0,
        help="seconds a job of a type this worker cannot run waits for a worker that can (rolling deploys)",
    )
    worker.add_argument(
        "--unknown-type-timeout",
        type=float,
        default=300.0,
        help="seconds after which such a job fails with NoHandlerError",
    )
    worker.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="where the queues live, in place of the mediator's own setting: redis://host:port/db or, "
        "through Sentinel, redis+sentinel://host:port,host:port/<master name>/<db>",
    )
    worker.add_argument("--log-level", default="INFO")
    return parser.parse_args(arguments)


def main(arguments: Sequence[str] | None = None) -> None:
    """Run the command given on the command line."""
    options = parse(sys.argv[1:] if arguments is None else arguments)
    logging.basicConfig(level=options.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mediator = load_mediator(options.mediator)
    if options.redis is not None:
        try:
            check_target(options.redis)
        except ValueError as error:
            raise SystemExit(f"invalid --redis: {error}") from error
        mediator._redis_target = options.redis
    try:
        settings = WorkerSettings(
            queues=[queue.strip() for queue in options.queues.split(",") if queue.strip()],
            max_jobs=options.max_jobs,
            name=options.name,
            lease=options.lease,
            heartbeat=options.heartbeat,
            grace=options.grace,
            idle_check=options.idle_check,
            max_lost=options.max_lost,
            unknown_type_delay=options.unknown_type_delay,
            unknown_type_timeout=options.unknown_type_timeout,
        )
    except ValueError as error:
        raise SystemExit(f"invalid worker settings: {error}") from error
    if not mediator.has_handlers:
        raise SystemExit(
            f"{options.mediator} has no handlers: a worker would fail every job it takes. Import the "
            "modules that register them in the module that defines the mediator"
        )
    asyncio.run(run_worker(mediator, settings))
