"""The local stack, the README's "run" command: ``python -m services.stack [--api-port 8000]``.

It starts the API and the three workers as child processes of this one, on an embedded Redis when
``REDIS_URL`` is unset and on SQLite in ``.local/`` when ``DATABASE_URL`` is unset; prefixes every line a
child prints with its name; prints where to point a browser and curl once everything answers; and on
Ctrl-C or SIGTERM stops every child by its PID (the API and workers first, so they drain while Redis still
runs, then Redis) and exits 0. A worker that crashes is started again with backoff while the rest runs on;
the stack gives up, stops everything and exits 1 only when the API or the embedded Redis cannot be kept up.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import httpx

from services.embedded_redis import EmbeddedRedis, EmbeddedRedisError, free_port, start_redis
from services.settings import DEFAULT_SQLITE
from services.supervision import API_GIVE_UP, Child, describe_exit, say
from services.worker.profiles import PROFILES

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# Longer than a worker's own drain (25 s), so a worker finishes its jobs before it is killed.
GRACE = 30.0
STARTUP_TIMEOUT = 90.0
# Per-worker overrides make no sense for three workers at once; the stack's workers use their profiles.
_WORKER_OVERRIDES = (
    "WORKER_PROFILE",
    "WORKER_NAME",
    "MAX_CONCURRENT_JOBS",
    "WORKER_QUEUES",
    "WORKER_HTTP_PORT",
)
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class StackError(RuntimeError):
    """The stack cannot start or keep running; the message says which part failed and how."""


def without_password(url: str) -> str:
    """Return *url* with any password (a Sentinel URL's ``sentinel_password`` too) replaced by ``***``."""
    password = urlsplit(url).password
    if password is not None:
        url = url.replace(f":{password}@", ":***@", 1)
    return re.sub(r"([?&]sentinel_password=)[^&#]*", r"\1***", url)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


class Stack:
    """The processes of the local stack, started and stopped in order."""

    def __init__(self, api_port: int, work_scale: float | None, data_dir: Path) -> None:
        self.api_port = api_port
        self.work_scale = work_scale
        self.data_dir = data_dir
        self.base_url = f"http://{HOST}:{api_port}"
        self.children: list[Child] = []
        self.worker_ports: dict[str, int] = {}
        self.redis: EmbeddedRedis | None = None
        self.redis_restarts = 0
        self.redis_url = os.environ.get("REDIS_URL", "")
        self.database_url = os.environ.get("DATABASE_URL", "")
        self.stop_requests = 0

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Note a stop signal; the main loop acts on it (a second one during the stop kills at once)."""
        self.stop_requests += 1

    # Starting ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start Redis when needed, then the API and the three workers.

        Raises:
            StackError: the API's port is taken.
            EmbeddedRedisError: no Redis is configured and none can be started.
        """
        with socket.socket() as probe:
            # As uvicorn binds: connections of an earlier run still in TIME_WAIT do not count as in use.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, self.api_port))
            except OSError as error:
                raise StackError(
                    f"cannot serve the API on {HOST}:{self.api_port} ({error.strerror}); "
                    "stop what uses it or pass --api-port"
                ) from None
        if not self.redis_url:
            self.redis = start_redis(self.data_dir / "redis")
            self.redis_url = self.redis.url
        if self.stop_requests:  # Ctrl-C while Redis started: start nothing more
            return
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / DEFAULT_SQLITE.name}"
        environment = self._environment()
        uvicorn = ["-m", "uvicorn", "services.api.app:app", "--host", HOST, "--port", str(self.api_port)]
        # Lets a long request (a mixed workload waits for its jobs) end before the stack's own grace does.
        self._spawn("api", [*uvicorn, "--timeout-graceful-shutdown", "20"], environment)
        for profile in PROFILES:
            # Each worker serves /health and /worker-info on a port of its own, kept across restarts.
            port = self.worker_ports[profile] = free_port()
            worker = environment | {"WORKER_HTTP_HOST": HOST, "WORKER_HTTP_PORT": str(port)}
            self._spawn(f"worker-{profile}", ["-m", "services.worker", profile], worker)

    def _environment(self) -> dict[str, str]:
        environment = {name: value for name, value in os.environ.items() if name not in _WORKER_OVERRIDES}
        environment |= {
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "PYTHONUNBUFFERED": "1",
        }
        if self.work_scale is not None:
            environment["WORK_SCALE"] = repr(self.work_scale)
        return environment

    def _spawn(self, name: str, arguments: list[str], environment: dict[str, str]) -> None:
        child = Child(name, arguments, environment, cwd=ROOT)
        child.start()
        self.children.append(child)

    def _check_children(self, when: str) -> None:
        for child in self.children:
            returncode = child.exited()
            if returncode is not None:
                raise StackError(
                    f"{child.name} (pid {child.pid}) ended {when} ({describe_exit(returncode)}); "
                    "its output is above"
                )
        self._check_redis(when)

    def _check_redis(self, when: str) -> None:
        if self.redis is None or self.redis.process.poll() is None:
            return
        ended = describe_exit(self.redis.process.returncode)
        log = self.redis.directory / "redis.log"
        if self.redis_restarts >= 3:
            raise StackError(f"the embedded Redis keeps ending {when} ({ended}); its log is {log}")
        self.redis_restarts += 1
        say(f"The embedded Redis (pid {self.redis.pid}) ended {when} ({ended}); starting it again")
        try:
            self.redis.restart()
        except EmbeddedRedisError as error:
            raise StackError(f"the embedded Redis cannot be kept up: {error}") from None
        say(f"The embedded Redis is back (pid {self.redis.pid}, {self.redis.url})")

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT) -> bool:
        """Wait until the API's /health answers 200 and its stats list the three workers.

        Returns:
            ``False`` when a stop signal came first.

        Raises:
            StackError: a child exited, or the stack was not ready within *timeout* seconds.
        """
        names = {profile.worker_name for profile in PROFILES.values()}
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while not self.stop_requests:
                self._check_children("during start-up")
                try:
                    health = client.get("/health")
                    if health.status_code != 200:
                        last = f"/health answered {health.status_code}: {health.text}"
                    else:
                        stats = client.get("/api/distributeddemo/worker-stats")
                        live = {worker["name"] for worker in stats.json().get("workers", [])}
                        if names <= live:
                            return True
                        last = f"workers not registered yet: {', '.join(sorted(names - live))}"
                except (httpx.HTTPError, ValueError) as error:
                    last = f"{type(error).__name__}: {error}"
                if time.monotonic() > deadline:
                    raise StackError(f"the stack was not ready within {timeout:.0f}s; last: {last}")
                time.sleep(0.25)
        return False

    def announce(self) -> None:
        """Print where everything runs and keeps its data, what to open, and the original's curl examples."""
        base = self.base_url
        redis = (
            f"embedded redis-server on {self.redis.url} (pid {self.redis.pid}; a free port picked at start), "
            f"data and log in {_shown(self.redis.directory)}"
            if self.redis is not None
            else f"{without_password(self.redis_url)} (REDIS_URL)"
        )
        database = without_password(self.database_url)
        if database.startswith("sqlite"):
            database = f"SQLite file {_shown(Path(database.split(':///', 1)[1]))}"
        api = next(child for child in self.children if child.name == "api")
        say()
        say("The distributed demo is up.")
        say(f"  API:            {base} (pid {api.pid}), enqueues only")
        for child in self.children:
            if child.name.startswith("worker-"):
                profile = child.name.removeprefix("worker-")
                info = f"http://{HOST}:{self.worker_ports[profile]}/worker-info"
                say(f"  {PROFILES[profile].worker_name + ':':<16}{info} (pid {child.pid})")
        say(f"  Redis:          {redis}")
        say(f"  app data:       {database}")
        say()
        say(f"  Job dashboard:  {base}/dashboard  (also at {base}/hangfire)")
        say(f"  Swagger UI:     {base}/schema/swagger  (also at {base}/swagger and {base}/schema)")
        say(f"  Scalar:         {base}/schema/scalar")
        say(f"  ReDoc:          {base}/schema/redoc")
        say(f"  OpenAPI JSON:   {base}/schema/openapi.json")
        say(f"  Worker stats:   {base}/api/distributeddemo/worker-stats  (queues and live workers)")
        say(f"  Health:         {base}/health")
        say("  Logs:           below, each line behind the name of the process that printed it")
        say()
        say("Try the original README's examples:")
        say(f'  curl -X POST "{base}/api/distributeddemo/stress-test?jobCount=100"')
        say(f'  curl -X POST "{base}/api/distributeddemo/mixed-workload?reportCount=5&userCount=10"')
        say(f'  curl "{base}/api/distributeddemo/worker-stats"')
        say(f'  curl -X POST "{base}/api/distributeddemo/scheduled-cascade"')
        say(f'  curl -X POST "{base}/api/distributeddemo/trigger-all-recurring"')
        say()
        say("A worker that crashes is started again. Press Ctrl-C to stop everything.")

    # Running and stopping ---------------------------------------------------------------------------------

    def supervise(self) -> None:
        """Keep the stack up until a stop signal arrives: start crashed children again, with backoff.

        Raises:
            StackError: the API crashed too often in a row, or the embedded Redis cannot be kept up.
        """
        while not self.stop_requests:
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is None and (returncode := child.exited()) is not None:
                    self._crashed(child, returncode, now)
                elif child.due(now):
                    child.start()
                    say(f"{child.name} started again (pid {child.pid})")
            self._check_redis("unexpectedly")
            time.sleep(0.2)

    def _crashed(self, child: Child, returncode: int, now: float) -> None:
        delay = child.schedule_restart(now)
        if child.name == "api" and child.crashes_in_a_row >= API_GIVE_UP:
            raise StackError(
                f"the API (pid {child.pid}) ended {API_GIVE_UP} times in a row "
                f"({describe_exit(returncode)}); it cannot be kept up; its output is above"
            )
        say(
            f"{child.name} (pid {child.pid}) ended unexpectedly ({describe_exit(returncode)}); "
            f"starting it again in {delay:g} s (crash {child.crashes_in_a_row} in a row); "
            "the rest of the stack runs on"
        )

    def stop(self, grace: float = GRACE) -> None:
        """SIGTERM the API and workers, SIGKILL those still running after *grace* seconds, then stop Redis."""
        running = [child for child in self.children if child.exited() is None]
        if running:
            say(f"Stopping {', '.join(f'{c.name} (pid {c.pid})' for c in running)} ...")
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        requests = self.stop_requests
        deadline = time.monotonic() + grace
        while any(child.exited() is None for child in running):
            if time.monotonic() > deadline or self.stop_requests > requests + 1:
                break
            time.sleep(0.05)
        for child in running:
            assert child.process is not None
            if child.exited() is None:
                say(f"{child.name} (pid {child.pid}) did not stop within {grace:.0f}s; killing it")
                child.process.kill()
            child.process.wait()
            child.exited()  # its last lines printed
        if self.redis is not None:
            self.redis.stop()
        if self.children:
            outcomes = [f"{c.name} {describe_exit(c.exited() or 0)}" for c in self.children if c.process]
            if self.redis is not None:
                outcomes.append(f"redis {describe_exit(self.redis.process.returncode)}")
            say(f"Stopped: {', '.join(outcomes)}.")


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 1 to 65535, got {port}")
    return port


def _scale(raw: str) -> float:
    try:
        scale = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not 0 <= scale <= 100:
        raise argparse.ArgumentTypeError(f"the work scale is from 0 to 100, got {scale}")
    return scale


def parse(arguments: Sequence[str]) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m services.stack",
        description=(
            "Run the distributed demo on this machine: the API and three workers, on an embedded Redis "
            "unless REDIS_URL is set and on SQLite unless DATABASE_URL is set. Ctrl-C stops everything."
        ),
    )
    parser.add_argument("--api-port", type=_port, default=8000, help="the API's port (default 8000)")
    parser.add_argument(
        "--work-scale",
        type=_scale,
        default=None,
        help="multiplies the demo jobs' simulated 1-5 s of work; 0 makes them instant (default: "
        "WORK_SCALE, else 1)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_SQLITE.parent,
        help=f"where the embedded Redis and SQLite keep their data (default {_shown(DEFAULT_SQLITE.parent)})",
    )
    return parser.parse_args(arguments)


def main(arguments: Sequence[str] | None = None) -> None:
    """Run the stack until Ctrl-C or SIGTERM; exit 0 then, 1 when a part failed."""
    options = parse(sys.argv[1:] if arguments is None else arguments)
    stack = Stack(options.api_port, options.work_scale, options.data_dir.resolve())
    for signum in _STOP_SIGNALS:
        signal.signal(signum, stack.request_stop)
    failed = False
    try:
        stack.start()
        if stack.wait_until_ready():
            stack.announce()
            stack.supervise()
    except (StackError, EmbeddedRedisError) as error:
        print(f"services.stack: {error}", file=sys.stderr, flush=True)  # noqa: T201
        failed = True
    finally:
        stack.stop()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
