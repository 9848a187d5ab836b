"""The command line: start a worker, or an outbox relay, for a mediator found by its import path."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._connection import check_target
from ._mediator import Mediator
from ._worker import run_worker
from ._worker_settings import PREFETCH, WorkerSettings

if TYPE_CHECKING:
    from .outbox import OutboxRelay


def load_object(path: str) -> Any:
    """Import ``package.module:attribute`` and return what it names.

    Raises:
        SystemExit: the path is malformed, or the module does not import or lacks the attribute.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"expected package.module:attribute, got {path!r}")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise SystemExit(f"cannot load {path!r}: {error}") from error


def load_mediator(path: str) -> Mediator:
    """Import ``package.module:attribute`` and return the `Mediator` it names.

    Raises:
        SystemExit: the path is malformed, the module does not import, or the attribute is no Mediator.
    """
    target = load_object(path)
    if not isinstance(target, Mediator):
        raise SystemExit(f"{path!r} is a {type(target).__name__}, not an arq_mediator.Mediator")
    return target


def load_relay(path: str, options: argparse.Namespace) -> OutboxRelay:
    """Return a relay of the `Outbox`, `OutboxRelay` or `Mediator` (default table) that *path* names.

    Raises:
        SystemExit: *path* names something else, or options are given that it already fixes.
    """
    from sqlalchemy import MetaData
    from sqlalchemy.exc import ArgumentError
    from sqlalchemy.ext.asyncio import create_async_engine

    from .outbox import DEFAULT_TABLE, Outbox, OutboxRelay, outbox_table

    target = load_object(path)
    if isinstance(target, OutboxRelay):
        if options.durable is not None:
            raise SystemExit(f"{path!r} is an OutboxRelay: its durability is set in code, not by --durable")
        return target
    if isinstance(target, Outbox) and options.table:
        raise SystemExit(f"{path!r} is an Outbox of table {target.table.name!r}: --table is for a Mediator")
    if not isinstance(target, Outbox | Mediator):
        raise SystemExit(
            f"{path!r} is a {type(target).__name__}, not an arq_mediator Mediator, Outbox or OutboxRelay"
        )
    try:
        engine = create_async_engine(options.database_url) if options.database_url else None
    except (ArgumentError, ImportError) as error:  # not a URL, or its driver is not installed
        raise SystemExit(f"invalid --database-url {options.database_url!r}: {error}") from error
    try:
        if isinstance(target, Mediator):
            target = Outbox(target, outbox_table(MetaData(), options.table or DEFAULT_TABLE))
        return OutboxRelay(
            target,
            engine=engine,
            batch_size=options.batch_size,
            poll_interval=options.poll_interval,
            keep_sent=options.keep_sent,
            durable=options.durable,
        )
    except ValueError as error:
        raise SystemExit(f"invalid relay settings: {error}") from error


def parse(arguments: Sequence[str]) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m arq_mediator", description="Run arq-mediator workers and outbox relays."
    )
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
        "--no-push",
        action="store_true",
        help="never take jobs pushed by the enqueue while idle: be woken and claim them instead",
    )
    worker.add_argument(
        "--prefetch",
        type=int,
        default=PREFETCH,
        help=f"jobs of the first queue claimed ahead of free slots, at most (default {PREFETCH}; 0: off)",
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
    worker.add_argument(
        "--relay",
        default=None,
        metavar="MODULE:OUTBOX",
        help="also relay this Outbox (or OutboxRelay) to Redis; its database comes from the mediator's "
        "lifespans or the relay itself",
    )
    worker.add_argument("--log-level", default="INFO")
    relay = commands.add_parser(
        "relay", help="move committed outbox rows to Redis until SIGTERM or Ctrl-C (no jobs are run)"
    )
    relay.add_argument(
        "outbox",
        metavar="MODULE:MEDIATOR_OR_OUTBOX",
        help="import path of an Outbox, an OutboxRelay, or a Mediator (whose outbox uses --table)",
    )
    relay.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy async URL of the database; by default the engine the mediator's lifespans provide",
    )
    relay.add_argument(
        "--table", default=None, help="the outbox table of a Mediator (default arq_mediator_outbox)"
    )
    relay.add_argument("--batch-size", type=int, default=100, help="rows pushed per round trip (default 100)")
    relay.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between looks when no NOTIFY comes"
    )
    relay.add_argument(
        "--keep-sent", type=float, default=0.0, help="seconds relayed rows are kept (default 0: deleted)"
    )
    relay.add_argument(
        "--durable",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="delete a batch's rows only once a replica holds its jobs (WAIT 1), or not with --no-durable; "
        "by default as the mediator's durable_enqueue says",
    )
    relay.add_argument("--log-level", default="INFO")
    return parser.parse_args(arguments)


def main(arguments: Sequence[str] | None = None) -> None:
    """Run the command given on the command line."""
    options = parse(sys.argv[1:] if arguments is None else arguments)
    logging.basicConfig(level=options.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if options.command == "relay":
        asyncio.run(_relay(load_relay(options.outbox, options), own_engine=options.database_url is not None))
        return
    mediator = load_mediator(options.mediator)
    if options.redis is not None:
        try:
            check_target(options.redis)
        except ValueError as error:
            raise SystemExit(f"invalid --redis: {error}") from error
        mediator._redis_target = options.redis
    relay = None
    if options.relay:
        relay = load_relay(
            options.relay, argparse.Namespace(table=None, database_url=None, **_RELAY_DEFAULTS)
        )
        if relay.outbox.mediator is not mediator:
            raise SystemExit(
                f"the outbox {options.relay!r} belongs to another mediator than {options.mediator!r}"
            )
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
            prefetch=options.prefetch,
            relay=relay,
            push_when_idle=not options.no_push,
        )
    except ValueError as error:
        raise SystemExit(f"invalid worker settings: {error}") from error
    if not mediator.has_handlers:
        raise SystemExit(
            f"{options.mediator} has no handlers: a worker would fail every job it takes. Import the "
            "modules that register them in the module that defines the mediator"
        )
    asyncio.run(run_worker(mediator, settings))


_RELAY_DEFAULTS = {"batch_size": 100, "poll_interval": 1.0, "keep_sent": 0.0, "durable": None}


async def _relay(relay: OutboxRelay, *, own_engine: bool) -> None:
    """Run *relay* until SIGTERM or SIGINT; dispose of its engine when this command made it."""
    from .outbox import run_relay

    try:
        await run_relay(relay)
    finally:
        if own_engine:
            await relay.engine.dispose()
