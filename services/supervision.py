"""The local stack's child processes: started with their output prefixed by name, restarted with backoff.

A crashed worker must not take the demo down (the original promises "worker crashes don't affect API
availability", and compose restarts a crashed container): the stack starts it again after a pause that
doubles with each crash in a row, up to `MAX_DELAY`, and says so. The API is restarted the same way, but
when it crashes `API_GIVE_UP` times in a row without running `STABLE_AFTER` seconds in between, it cannot
be kept up and the stack stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

from services.embedded_redis import die_with_parent

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
# A child that ran this long before it crashed starts its backoff over.
STABLE_AFTER = 30.0
API_GIVE_UP = 5
NAME_WIDTH = 16

_output_lock = threading.Lock()


def say(line: str = "") -> None:
    """Print *line* now, whole, between the children's lines."""
    with _output_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def describe_exit(returncode: int) -> str:
    """Return "exit code N", or the signal that ended the process."""
    if returncode < 0:
        try:
            return f"stopped by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"stopped by signal {-returncode}"
    return f"exit code {returncode}"


def restart_delay(crashes_in_a_row: int) -> float:
    """Return how long to wait before the next start after *crashes_in_a_row* crashes: 1, 2, 4, ... 30 s."""
    return float(min(FIRST_DELAY * 2 ** max(crashes_in_a_row - 1, 0), MAX_DELAY))


def _pump(prefix: bytes, source: IO[bytes]) -> None:
    """Copy *source* to this process's output line by line, each line behind *prefix*."""
    for line in iter(source.readline, b""):
        with _output_lock:
            sys.stdout.buffer.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
            sys.stdout.flush()
    source.close()


@dataclass
class Child:
    """One process of the stack, which it may start again after a crash."""

    name: str
    arguments: list[str]
    environment: dict[str, str]
    cwd: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes_in_a_row: int = 0
    restart_at: float | None = None
    _pump: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """Return its current process id."""
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start the process with its output prefixed by the child's name."""
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter and fixed arguments
            [sys.executable, *self.arguments],
            cwd=self.cwd,
            env=self.environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=partial(die_with_parent, os.getpid()) if sys.platform == "linux" else None,
        )
        assert self.process.stdout is not None
        prefix = f"{self.name:<{NAME_WIDTH}}| ".encode()
        self._pump = threading.Thread(
            target=_pump, args=(prefix, self.process.stdout), name=f"{self.name} output", daemon=True
        )
        self._pump.start()
        self.started_at = time.monotonic()
        self.restart_at = None

    def exited(self) -> int | None:
        """Return the exit code once the process has ended (and its output is all printed), else None."""
        if self.process is None:
            return None
        returncode = self.process.poll()
        if returncode is not None and self._pump is not None:
            self._pump.join(timeout=5)
        return returncode

    def schedule_restart(self, now: float) -> float:
        """Count a crash and return the delay before the next start, which `due` then reports."""
        ran = now - self.started_at
        self.crashes_in_a_row = 1 if ran >= STABLE_AFTER else self.crashes_in_a_row + 1
        delay = restart_delay(self.crashes_in_a_row)
        self.restart_at = now + delay
        return delay

    def due(self, now: float) -> bool:
        """Return whether a restart is scheduled and its time has come."""
        return self.restart_at is not None and now >= self.restart_at
