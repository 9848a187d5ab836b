"""The demo's commands as OS processes for the tests: their output in a file, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from services.settings import Settings

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
