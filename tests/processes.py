"""OS processes the tests start: their output in a file, waited on with deadlines, stopped by PID."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop_by_pid(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM *process* if it runs, SIGKILL it when it outlives *timeout* seconds; reap it either way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10.0)


@dataclass
class ManagedProcess:
    """One process a test started and the file its output (stdout and stderr) goes to."""

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
class ManagedProcesses:
    """Starts processes for a test and stops every one of them by PID at the end, however it ends."""

    directory: Path
    started: list[ManagedProcess] = field(default_factory=list)

    def start(
        self,
        name: str,
        arguments: Sequence[str],
        environment: Mapping[str, str],
        *,
        new_session: bool = False,
    ) -> ManagedProcess:
        """Run ``python *arguments*`` from the project's folder with *environment*; output to a file."""
        return self.start_program(name, [sys.executable, *arguments], environment, new_session=new_session)

    def start_program(
        self,
        name: str,
        command: Sequence[str],
        environment: Mapping[str, str],
        *,
        new_session: bool = False,
    ) -> ManagedProcess:
        """Run *command* (a program and its arguments) from the project's folder; output to a file."""
        log_path = self.directory / f"{name}.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            list(command),
            cwd=ROOT,
            env=dict(environment),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
        started = ManagedProcess(name, process, log_path, log_file)
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
