"""The demo's commands as OS processes for the tests: their output in a file, stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from services.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# What a shell might carry into the tests and would change what a worker or the stack runs as.
SERVICE_VARIABLES = (
    "REDIS_URL",
    "DATABASE_URL",
    "WORK_SCALE",
    "EMAIL_FAILURE_RATE",
    "OTEL_SERVICE_NAME",
    "WORKER_PROFILE",
    "WORKER_NAME",
    "MAX_CONCURRENT_JOBS",
    "WORKER_QUEUES",
    "WORKER_HTTP_PORT",
    "WORKER_HTTP_HOST",
    "LOG_LEVEL",
)


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def clean_environment(**variables: str) -> dict[str, str]:
    """Return this process's environment without the services' variables, plus *variables*."""
    environment = {name: value for name, value in os.environ.items() if name not in SERVICE_VARIABLES}
    return environment | {"PYTHONUNBUFFERED": "1"} | variables


def worker_environment(settings: Settings, **variables: str) -> dict[str, str]:
    """Return the environment of a worker process on the test's *settings*, plus *variables*."""
    return clean_environment(
        REDIS_URL=settings.redis_url,
        DATABASE_URL=settings.database_url,
        WORK_SCALE=str(settings.work_scale),
        EMAIL_FAILURE_RATE=str(settings.email_failure_rate),
        **variables,
    )


@dataclass
class ServiceProcess:
    """One process of a demo command and the file its output (stdout and stderr) goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.process.pid

    def output(self) -> str:
        """Return what the process printed so far."""
        return self.log_path.read_text(errors="replace")

    async def printed(self, text: str, timeout: float = 30.0) -> str:
        """Wait until the output holds *text*; return the output. Fail early if the process exits first."""
        deadline = time.monotonic() + timeout
        while text not in (output := self.output()):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before printing {text!r}:\n{output}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not print {text!r} within {timeout}s:\n{output}")
            await asyncio.sleep(0.05)
        return output

    async def exited(self, timeout: float) -> int:
        """Wait up to *timeout* seconds for the process to exit; return its exit code."""
        deadline = time.monotonic() + timeout
        while (returncode := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not exit within {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.05)
        return returncode

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the process by its PID and return its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return await self.exited(timeout)


@dataclass
class ServiceProcesses:
    """Starts demo commands for a test and stops every one of them by PID at the end, however it ends."""

    directory: Path
    started: list[ServiceProcess] = field(default_factory=list)

    def start(
        self,
        name: str,
        arguments: Sequence[str],
        environment: Mapping[str, str],
        *,
        new_session: bool = False,
    ) -> ServiceProcess:
        """Run ``python *arguments*`` from the project's folder with *environment*; output to a file."""
        log_path = self.directory / f"{name}.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, *arguments],
            cwd=ROOT,
            env=dict(environment),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
        started = ServiceProcess(name, process, log_path, log_file)
        self.started.append(started)
        return started

    def logs(self) -> str:
        """Return every process's output, for failure messages."""
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.output()}" for p in self.started)

    def stop_all(self) -> None:
        """SIGTERM every process still running, SIGKILL those left after a grace; reap them all."""
        for started in self.started:
            if started.process.poll() is None:
                started.process.terminate()
        deadline = time.monotonic() + 15.0
        for started in self.started:
            try:
                started.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                started.process.kill()
                started.process.wait(timeout=10.0)
            started.log_file.close()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after its last ")" do not.
    return raw[raw.rindex(")") + 2 :].split()


def process_identity(pid: int) -> tuple[int, str] | None:
    """Return (pid, start time) of a live process, which tells it apart from a later one given its PID."""
    fields = _stat_fields(pid)
    return None if fields is None else (pid, fields[19])


def descendants(pid: int) -> Iterator[tuple[tuple[int, str], str]]:
    """Yield the identity and command line of every live descendant of *pid*, read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    pending = list(parents.get(pid, []))
    while pending:
        child = pending.pop()
        pending += parents.get(child, [])
        identity = process_identity(child)
        if identity is not None:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            yield identity, command


def still_running(identity: tuple[int, str]) -> bool:
    """Return whether the process of *identity* (not merely one with its PID) still exists."""
    return process_identity(identity[0]) == identity


def kill_if_running(identity: tuple[int, str]) -> None:
    """SIGKILL the process of *identity* if it still exists."""
    if still_running(identity):
        with contextlib.suppress(ProcessLookupError):
            os.kill(identity[0], signal.SIGKILL)
