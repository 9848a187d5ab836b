"""An in-memory `DashboardSource` for the HTTP-level tests of the pages, actions and access rules.

The browser tests use the real store on jobs a real worker ran; these tests are about HTTP (status
codes, forms, tokens, headers), so a source whose contents a test sets directly is clearer there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from arq_mediator.dashboard import (
    DashboardEvent,
    JobDetail,
    JobState,
    JobStep,
    JobSummary,
    LogLine,
    Page,
    QueueSummary,
    RecurringSummary,
    StateCounts,
    ThroughputPoint,
    WorkerSummary,
)

T0 = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)


def job(
    job_id: str, state: JobState, *, queue: str = "default", request_type: str = "demo.Ping"
) -> JobDetail:
    """Return a job *job_id* in *state* with a payload, steps and a log line."""
    summary = JobSummary(
        id=job_id,
        request_type=request_type,
        queue=queue,
        state=state,
        tries=1,
        enqueued_at=T0,
        started_at=T0 + timedelta(seconds=1),
        finished_at=T0 + timedelta(seconds=3),
        worker="worker-1",
    )
    failed = state is JobState.FAILED
    return JobDetail(
        summary=summary,
        payload={"text": "<script>alert(1)</script>", "n": 1},
        result={"ok": True} if state is JobState.SUCCEEDED else None,
        error_type="ValueError" if failed else None,
        error_message="bad things" if failed else None,
        traceback="Traceback (most recent call last):\nValueError: bad things" if failed else None,
        steps=[
            JobStep(at=T0, state="enqueued"),
            JobStep(at=T0, state="started", try_number=1, worker="worker-1"),
        ],
        wait=timedelta(seconds=1),
        run=timedelta(seconds=2),
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        parent_id="parent-1",
        progress=0.5,
        logs=[LogLine(at=T0, try_number=1, level="INFO", message="working")],
    )


@dataclass
class FakeSource:
    """Jobs kept in a dict; actions change them and record what was asked."""

    jobs_by_id: dict[str, JobDetail] = field(default_factory=dict)
    done: list[tuple[str, ...]] = field(default_factory=list)
    feed: asyncio.Queue[DashboardEvent] = field(default_factory=asyncio.Queue)
    subscriptions: int = 0

    def add(self, *details: JobDetail) -> None:
        for detail in details:
            self.jobs_by_id[detail.summary.id] = detail

    async def counts(self) -> StateCounts:
        by_state = dict.fromkeys(JobState, 0)
        for detail in self.jobs_by_id.values():
            by_state[detail.summary.state] += 1
        return StateCounts(**{state.value: number for state, number in by_state.items()})

    async def throughput(self, resolution: str, points: int) -> list[ThroughputPoint]:
        step = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[resolution]
        return [
            ThroughputPoint(start=T0 + timedelta(seconds=step * i), succeeded=i % 5, failed=i % 2)
            for i in range(points)
        ]

    async def queues(self) -> list[QueueSummary]:
        names = sorted({detail.summary.queue for detail in self.jobs_by_id.values()})
        return [
            QueueSummary(name=name, ready=1, scheduled=0, running=0, failed=0, workers=["worker-1"])
            for name in names
        ]

    async def jobs(
        self,
        state: JobState,
        *,
        queue: str | None = None,
        request_type: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[JobSummary]:
        rows = [
            detail.summary
            for detail in self.jobs_by_id.values()
            if detail.summary.state is state
            and (queue is None or detail.summary.queue == queue)
            and (request_type is None or detail.summary.request_type == request_type)
        ]
        return Page(items=rows[offset : offset + limit], total=len(rows), offset=offset, limit=limit)

    async def request_types(self) -> list[str]:
        return sorted({detail.summary.request_type for detail in self.jobs_by_id.values()})

    async def job(self, job_id: str) -> JobDetail | None:
        return self.jobs_by_id.get(job_id)

    async def workers(self) -> list[WorkerSummary]:
        return [
            WorkerSummary(
                name="worker-1",
                instance="worker-1-abc",
                host="localhost",
                pid=4242,
                queues=["critical", "default"],
                max_jobs=10,
                running=1,
                processed=100,
                failed=3,
                heartbeat_age=timedelta(seconds=2),
            )
        ]

    async def recurring(self) -> list[RecurringSummary]:
        return [
            RecurringSummary(
                name="nightly",
                cron="0 2 * * *",
                request_type="demo.Cleanup",
                queue="cleanup",
                next_run=T0 + timedelta(hours=20),
                last_run=T0 - timedelta(hours=4),
                last_outcome=JobState.SUCCEEDED,
                last_job_id="nightly-1",
            )
        ]

    def _move(self, job_id: str, state: JobState) -> bool:
        detail = self.jobs_by_id.get(job_id)
        if detail is None:
            return False
        self.jobs_by_id[job_id] = replace(detail, summary=replace(detail.summary, state=state))
        return True

    async def requeue(self, job_id: str) -> bool:
        self.done.append(("requeue", job_id))
        return self._move(job_id, JobState.ENQUEUED)

    async def delete(self, job_id: str) -> bool:
        self.done.append(("delete", job_id))
        return self.jobs_by_id.pop(job_id, None) is not None

    async def abort(self, job_id: str) -> bool:
        self.done.append(("abort", job_id))
        return self._move(job_id, JobState.ABORTED)

    async def bulk(
        self, action: Literal["requeue", "delete", "abort"], state: JobState, queue: str | None = None
    ) -> int:
        self.done.append(("bulk", action, state.value, queue or ""))
        page = await self.jobs(state, queue=queue, limit=10_000)
        for row in page.items:
            await getattr(self, action)(row.id)
        return page.total

    async def trigger(self, name: str) -> str:
        self.done.append(("trigger", name))
        return f"{name}-now"

    async def events(self) -> AsyncIterator[DashboardEvent]:
        self.subscriptions += 1
        while True:
            yield await self.feed.get()
