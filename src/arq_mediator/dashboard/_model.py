"""What the dashboard shows, as plain data: the contract between the history store and the web pages.

The store (reading Redis, including the history the engine records) produces these; the pages render
them. Neither side imports the other's internals, so each can be tested alone: the pages against a
store filled by a real worker, the store without a web framework.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, Protocol, TypeVar

T = TypeVar("T")


class JobState(enum.StrEnum):
    """The states the dashboard lists jobs by (Hangfire's set, in our words)."""

    ENQUEUED = "enqueued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class StateCounts:
    """How many jobs are in each state now; finished states count what history still retains."""

    enqueued: int
    scheduled: int
    running: int
    retrying: int
    succeeded: int
    failed: int
    aborted: int


Resolution = Literal["second", "minute", "hour", "day"]


@dataclass(frozen=True, slots=True)
class ThroughputPoint:
    """Jobs that finished in one interval starting at *start*."""

    start: datetime
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """One queue: its counts and the workers that serve it (each listing its queues in priority order)."""

    name: str
    ready: int
    scheduled: int
    running: int
    failed: int
    workers: list[str]


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One row of a job list."""

    id: str
    request_type: str
    queue: str
    state: JobState
    tries: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None


@dataclass(frozen=True, slots=True)
class JobStep:
    """A state change: enqueued, started (try N on worker W), retry scheduled, succeeded, failed, aborted."""

    at: datetime
    state: str
    try_number: int | None = None
    worker: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class LogLine:
    """A line the handler logged through ``ctx.logger`` during one try."""

    at: datetime
    try_number: int
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class JobDetail:
    """Everything the job page shows."""

    summary: JobSummary
    payload: dict[str, Any] | None
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    steps: list[JobStep] = field(default_factory=list)
    wait: timedelta | None = None
    run: timedelta | None = None
    trace_id: str | None = None
    parent_id: str | None = None
    progress: float | None = None
    logs: list[LogLine] = field(default_factory=list)
    raw: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """One live worker process."""

    name: str
    instance: str
    host: str
    pid: int
    queues: list[str]
    max_jobs: int
    running: int
    processed: int
    failed: int
    heartbeat_age: timedelta


@dataclass(frozen=True, slots=True)
class RecurringSummary:
    """One recurring job."""

    name: str
    cron: str
    request_type: str
    queue: str
    next_run: datetime | None
    last_run: datetime | None
    last_outcome: JobState | None
    last_job_id: str | None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a longer list, newest first."""

    items: list[T]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class DashboardEvent:
    """Something changed: a job moved to *state* (pages refresh the parts that show it)."""

    kind: Literal["job", "worker", "queue"]
    job_id: str | None = None
    state: JobState | None = None
    queue: str | None = None


class DashboardSource(Protocol):
    """What the pages read and do. Every list is a range query on an index, never a scan of keys."""

    async def counts(self) -> StateCounts: ...

    async def throughput(self, resolution: Resolution, points: int) -> list[ThroughputPoint]: ...

    async def queues(self) -> list[QueueSummary]: ...

    async def jobs(
        self,
        state: JobState,
        *,
        queue: str | None = None,
        request_type: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[JobSummary]: ...

    async def request_types(self) -> list[str]: ...

    async def job(self, job_id: str) -> JobDetail | None: ...

    async def workers(self) -> list[WorkerSummary]: ...

    async def recurring(self) -> list[RecurringSummary]: ...

    async def requeue(self, job_id: str) -> bool: ...

    async def delete(self, job_id: str) -> bool: ...

    async def abort(self, job_id: str) -> bool: ...

    async def bulk(
        self, action: Literal["requeue", "delete", "abort"], state: JobState, queue: str | None = None
    ) -> int: ...

    async def trigger(self, name: str) -> str: ...

    def events(self) -> AsyncIterator[DashboardEvent]: ...
