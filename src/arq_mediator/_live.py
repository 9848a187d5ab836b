"""What a running job reports about itself: its progress and its handler's log lines, for the history.

A handler calls ``ctx.progress(0.4)`` and logs through ``ctx.logger`` as usual; both land in memory at
once (no await, no round trip in the handler) and a worker's `ReportWriter` writes what changed to the
job's history every fraction of a second, and once more before the job's outcome is recorded. Writing is
best effort: history is for people, and no Redis trouble here may slow or fail a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._history import history_key, logs_key
from ._layout import SINGLE, Layout, tag_of

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ._history import JobHistory

logger = logging.getLogger("arq_mediator.worker")

# The id of the job whose handler runs in this task, so a job it enqueues names it as its parent.
current_job: ContextVar[str | None] = ContextVar("arq_mediator_current_job", default=None)
# The longest log message a history keeps, in characters.
LOG_MESSAGE_LIMIT = 2000
# Seconds between two writes of running jobs' reports.
WRITE_EVERY = 0.5


def checked_fraction(fraction: float) -> float:
    """Return *fraction* as a float.

    Raises:
        ValueError: it is not a number from 0 to 1 (NaN and booleans included).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress must be a fraction from 0.0 to 1.0, got {fraction!r}")
    return float(fraction)


class JobReport:
    """The progress and log lines of one try of a running job not yet written to its history."""

    def __init__(self, job_id: str, try_number: int, max_lines: int, writer: ReportWriter) -> None:
        self.writer = writer
        self.job_id = job_id
        self.try_number = try_number
        self.progress: float | None = None
        self.progress_changed = False
        self.lines: deque[str] = deque(maxlen=max_lines)

    def close(self) -> None:
        """End this try's report: what is left of it is written soon (see `ReportWriter.close`)."""
        self.writer.close(self)

    @property
    def changed(self) -> bool:
        """Return whether anything is waiting to be written."""
        return self.progress_changed or bool(self.lines)

    def set_progress(self, fraction: float) -> None:
        """Record how far the job is, from 0.0 to 1.0.

        Raises:
            ValueError: *fraction* is not a number from 0 to 1.
        """
        self.progress = checked_fraction(fraction)
        self.progress_changed = True

    def add_line(self, level: int, message: str) -> None:
        """Keep one log line of this try (the oldest unwritten ones go first when too many wait)."""
        if len(message) > LOG_MESSAGE_LIMIT:
            message = message[:LOG_MESSAGE_LIMIT] + "[...]"
        line = {
            "at": int(time.time() * 1000),
            "try": self.try_number,
            "level": logging.getLevelName(level),
            "message": message,
        }
        self.lines.append(json.dumps(line, separators=(",", ":")))


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """The ``ctx.logger`` of a job: logs as usual, and keeps INFO and above in the job's history."""

    def __init__(self, target: logging.Logger, extra: Mapping[str, object], report: JobReport) -> None:
        super().__init__(target, extra)
        self.report = report

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log *msg* as `logging.LoggerAdapter.log` does, keeping a copy for the job's history."""
        if level >= logging.INFO:
            try:
                text = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):  # the same mistake logging itself reports, not ours to raise
                text = f"{msg} {args!r}"
            self.report.add_line(level, text)
        super().log(level, msg, *args, **kwargs)


class ReportWriter:
    """Write running jobs' reports to their histories: all that changed, in one round trip per turn.

    Args:
        redis: The worker's Redis client.
        history: The mediator's history settings (the bounds of what is kept).
    """

    def __init__(self, redis: Redis, history: JobHistory, layout: Layout = SINGLE) -> None:
        self._redis = redis
        self._history = history
        self._layout = layout
        self._reports: dict[int, JobReport] = {}
        # Reports of tries that ended, their last lines still to write; written on the next turn.
        self._closed: list[JobReport] = []
        self._wake = asyncio.Event()

    def open(self, job_id: str, try_number: int) -> JobReport:
        """Start the report of one try of *job_id*."""
        report = JobReport(job_id, try_number, self._history.max_log_lines, self)
        self._reports[id(report)] = report
        return report

    def close(self, report: JobReport) -> None:
        """Stop tracking *report* once its try ended; what is left of it is written soon, in a batch.

        Not awaited: the job's outcome does not wait for its last log lines.
        """
        self._reports.pop(id(report), None)
        if report.changed:
            self._closed.append(report)
            self._wake.set()

    async def run(self) -> None:
        """Write what changed: at once for tries that ended, every `WRITE_EVERY` seconds for the others."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WRITE_EVERY):
                    await self._wake.wait()
            await asyncio.sleep(0)  # the other tries ending in this same turn join the batch
            await self.flush()

    async def flush(self) -> None:
        """Write every report that changed, in one round trip."""
        self._wake.clear()
        changed = [report for report in self._reports.values() if report.changed] + self._closed
        self._closed = []
        if changed:
            await self._write(changed)

    async def _write(self, reports: list[JobReport]) -> None:
        keep_ms = 2 * self._history.keep_jobs_ms
        max_lines = self._history.max_log_lines
        async with self._redis.pipeline(transaction=False) as pipe:
            for report in reports:
                if self._layout.cluster and tag_of(report.job_id) is None:  # a foreign id: no history slot
                    report.lines.clear()
                    continue
                if report.progress_changed and report.progress is not None:
                    key = history_key(report.job_id, self._layout)
                    pipe.hset(key, "progress", repr(report.progress))
                    pipe.pexpire(key, keep_ms)
                    report.progress_changed = False
                if report.lines and max_lines:
                    key = logs_key(report.job_id, self._layout)
                    pipe.rpush(key, *report.lines)
                    pipe.ltrim(key, -max_lines, -1)
                    pipe.pexpire(key, keep_ms)
                report.lines.clear()
            try:
                await pipe.execute()
            except Exception as error:  # best effort: a lost line must not cost a job
                logger.debug("could not write the progress and logs of %d job(s): %r", len(reports), error)
