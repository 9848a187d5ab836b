"""The original demo's endpoints, at its paths: stress test, mixed workload, stats, cascade, recurring."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Parameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from arq_mediator import JobFailedError, JobHandle, Mediator
from arq_mediator import Request as Message
from services.api.budget import JobBudget
from services.api.openapi import problems
from services.api.resource_routes import status_url
from services.api.schemas import (
    ItemKind,
    JobError,
    MixedItem,
    MixedWorkloadOut,
    PendingItem,
    ScheduledCascadeOut,
    ScheduledJob,
    StressTestOut,
    TriggerAllOut,
    TriggeredJob,
    WorkerStatsOut,
)
from services.demo.handlers import RECURRING
from services.demo.messages import Cleanup, CreateUser, GenerateReport, ReportOut, SendEmail, UserOut

_STRESS_SPLIT = """Job *i* (1..N) goes to: `reports` (a performance report) when i % 4 == 0; else `emails`
when i % 3 == 0; else `critical` (create a user) when i % 5 == 0; else `cleanup`. N=100 gives cleanup 40,
emails 25, reports 25, critical 10. All jobs are enqueued in one round trip to Redis.

Each client may queue a budget of jobs per minute (`API_JOB_BUDGET`, 20,000 by default), counted over
every endpoint that queues work; a request that would go over it is refused whole with 429."""

_MIXED = """Reports (2 tries each) and user creations (3 tries each) are enqueued concurrently; the answer
waits for all of them and lists each item with its index (reports first, then users), kind, and result or
error: **200**. If `timeoutSeconds` passes first, the answer is **202 Accepted**: the finished items, and
under `pending` the ones still queued or running, with where to read each one's outcome later (the jobs go
on in the workers). Not 408: that would blame the client, and clients and proxies retry a 408 on their own,
which would queue the whole workload again."""


def stress_messages(job_count: int, batch: str) -> list[Message[Any]]:
    """Return the stress test's requests for jobs 1..*job_count*, split over the queues like the original."""
    messages: list[Message[Any]] = []
    for i in range(1, job_count + 1):
        if i % 4 == 0:
            messages.append(GenerateReport(kind="performance", title=f"Stress test report #{i}"))
        elif i % 3 == 0:
            messages.append(SendEmail(recipient=f"stress-{i}@example.com", subject=f"Stress test email #{i}"))
        elif i % 5 == 0:
            messages.append(CreateUser(email=f"stress-{batch}-{i}@example.com", name=f"Stress user {i}"))
        else:
            messages.append(Cleanup())
    return messages


async def _outcome(index: int, kind: ItemKind, handle: JobHandle[Any], timeout: float) -> MixedItem | None:
    """Wait up to *timeout* seconds for the job; return its item, or ``None`` while it still runs."""
    try:
        value = await handle.result(timeout=timeout)
    except TimeoutError:
        return None
    except JobFailedError as error:
        failure = JobError(type=error.remote_type, message=error.remote_message)
        return MixedItem(index=index, kind=kind, job_id=handle.id, status="failed", error=failure)
    return MixedItem(index=index, kind=kind, job_id=handle.id, status="succeeded", result=value)


class DistributedDemoController(Controller):
    """The endpoints of the original's `DistributedDemoController`."""

    path = "/api/distributeddemo"
    tags = ("distributed demo",)

    @post(
        "/stress-test",
        status_code=HTTP_200_OK,
        summary="Enqueue N jobs across the queues in one round trip",
        description=_STRESS_SPLIT,
        responses=problems(400, 429, 503),
    )
    async def stress_test(
        self,
        request: Request[Any, Any, Any],
        mediator: NamedDependency[Mediator],
        budget: NamedDependency[JobBudget],
        job_count: Annotated[
            int,
            QueryParameter(
                name="jobCount", ge=1, le=10_000, description="Jobs to enqueue", examples=[Example(value=100)]
            ),
        ] = 50,
    ) -> StressTestOut:
        """Enqueue *job_count* demo jobs split over the queues; answer with counts and the first ids."""
        budget.spend(request, job_count)
        handles = await mediator.enqueue_many(stress_messages(job_count, uuid.uuid4().hex[:12]))
        queues = Counter(handle.queue or "default" for handle in handles)
        return StressTestOut(
            message=f"Enqueued {job_count} jobs across {len(queues)} queues in one round trip",
            job_count=job_count,
            queues=dict(queues),
            jobs=[handle.id for handle in handles[:10]],
            total_jobs=len(handles),
            timestamp=datetime.now(UTC),
        )

    @post(
        "/mixed-workload",
        status_code=HTTP_200_OK,
        summary="Enqueue reports and user creations together and wait for every result",
        description=_MIXED,
        responses={
            HTTP_202_ACCEPTED: ResponseSpec(
                data_container=MixedWorkloadOut,
                description="The timeout passed first: the finished items, and the pending ones",
                generate_examples=False,
            ),
            **problems(400, 429, 503),
        },
    )
    async def mixed_workload(
        self,
        request: Request[Any, Any, Any],
        mediator: NamedDependency[Mediator],
        budget: NamedDependency[JobBudget],
        report_count: Annotated[
            int, QueryParameter(name="reportCount", ge=0, le=100, description="Reports")
        ] = 5,
        user_count: Annotated[int, QueryParameter(name="userCount", ge=0, le=100, description="Users")] = 10,
        timeout_seconds: Annotated[
            float,
            QueryParameter(name="timeoutSeconds", gt=0, le=600, description="Seconds to wait for results"),
        ] = 300,
    ) -> Response[MixedWorkloadOut]:
        """Enqueue both kinds concurrently, then wait for every result up to *timeout_seconds* in all."""
        # reportCount=0&userCount=0 is an empty workload, answered at once: a rule spanning two parameters
        # could not be stated in the OpenAPI document, which must say exactly what the API accepts.
        budget.spend(request, report_count + user_count)
        started = time.monotonic()
        batch = uuid.uuid4().hex[:12]
        kinds: list[ItemKind] = [
            "report" if i < report_count else "user" for i in range(report_count + user_count)
        ]
        enqueues = [
            mediator.enqueue(GenerateReport(kind="users", title=f"Mixed workload report #{i}"), max_tries=2)
            for i in range(report_count)
        ] + [
            mediator.enqueue(
                CreateUser(email=f"mixed-{batch}-{i}@example.com", name=f"Mixed user {i}"), max_tries=3
            )
            for i in range(user_count)
        ]
        # gather rather than a TaskGroup: an outage then raises the Redis error itself (a 503), not a group.
        enqueued = await asyncio.gather(*enqueues, return_exceptions=True)
        for outcome in enqueued:
            if isinstance(outcome, BaseException):
                raise outcome
        handles: list[JobHandle[ReportOut | UserOut]] = [h for h in enqueued if isinstance(h, JobHandle)]
        # One job at a time, against one deadline: the jobs run in parallel in the workers anyway, a
        # finished job answers at once, and once the deadline passed each remaining job is only looked at.
        deadline = time.monotonic() + timeout_seconds
        outcomes = [
            await _outcome(index, kind, handle, max(deadline - time.monotonic(), 0))
            for index, (kind, handle) in enumerate(zip(kinds, handles, strict=True))
        ]
        items = [item for item in outcomes if item is not None]
        pending = [
            PendingItem(index=index, kind=kinds[index], job_id=handle.id, status_url=status_url(handle.id))
            for index, (handle, outcome) in enumerate(zip(handles, outcomes, strict=True))
            if outcome is None
        ]
        still_running = len(pending)
        succeeded = sum(item.status == "succeeded" for item in items)
        body = MixedWorkloadOut(
            message=(
                f"{len(items)} of {len(outcomes)} jobs finished: {succeeded} succeeded, "
                f"{len(items) - succeeded} failed"
                + (f"; {still_running} still running after {timeout_seconds:g} s" if still_running else "")
            ),
            report_count=report_count,
            user_count=user_count,
            succeeded=succeeded,
            failed=len(items) - succeeded,
            still_running=still_running,
            elapsed_seconds=round(time.monotonic() - started, 3),
            items=items,
            pending=pending,
        )
        return Response(body, status_code=HTTP_202_ACCEPTED if still_running else HTTP_200_OK)

    @get(
        "/worker-stats",
        summary="Queues by state, live workers with their counters, and totals",
        responses=problems(503),
    )
    async def worker_stats(self, mediator: NamedDependency[Mediator]) -> WorkerStatsOut:
        """Read per-queue counts and every live worker's last heartbeat."""
        return WorkerStatsOut.from_stats(await mediator.stats(), datetime.now(UTC))

    @post(
        "/scheduled-cascade",
        status_code=HTTP_200_OK,
        summary="Schedule a sequence of emails at a fixed interval",
        description="Email *i* (1..count) is deferred by i x intervalSeconds: 30 s .. 150 s by default.",
        responses=problems(400, 429, 503),
    )
    async def scheduled_cascade(
        self,
        request: Request[Any, Any, Any],
        mediator: NamedDependency[Mediator],
        budget: NamedDependency[JobBudget],
        count: Annotated[int, Parameter(ge=1, le=50, description="Emails to schedule")] = 5,
        interval_seconds: Annotated[
            float, QueryParameter(name="intervalSeconds", ge=0, le=3600, description="Seconds between emails")
        ] = 30,
    ) -> ScheduledCascadeOut:
        """Defer *count* emails, the i-th by i x *interval_seconds*."""
        budget.spend(request, count)
        now = datetime.now(UTC)
        jobs: list[ScheduledJob] = []
        for sequence in range(1, count + 1):
            delay = timedelta(seconds=sequence * interval_seconds)
            email = SendEmail(
                recipient="cascade@example.com",
                subject=f"Scheduled email {sequence} of {count}",
                body=f"Sent {delay.total_seconds():g} s after the cascade was scheduled.",
            )
            handle = await mediator.defer(email, at=now + delay)
            jobs.append(ScheduledJob(job_id=handle.id, sequence=sequence, scheduled_at=now + delay))
        return ScheduledCascadeOut(
            message=f"Scheduled {count} emails {interval_seconds:g} s apart",
            count=count,
            interval_seconds=interval_seconds,
            jobs=jobs,
        )

    @post(
        "/trigger-all-recurring",
        status_code=HTTP_200_OK,
        summary="Run the three recurring jobs now",
        description=(
            "Enqueues now, besides their schedules: daily cleanup (02:00), the hourly usage report and "
            "the email queue processor (every 2 minutes)."
        ),
        responses=problems(429, 503),
    )
    async def trigger_all_recurring(
        self,
        request: Request[Any, Any, Any],
        mediator: NamedDependency[Mediator],
        budget: NamedDependency[JobBudget],
    ) -> TriggerAllOut:
        """Enqueue every recurring job of the demo once, now."""
        budget.spend(request, len(RECURRING))
        triggered = [TriggeredJob(name=name, job_id=(await mediator.trigger(name)).id) for name in RECURRING]
        return TriggerAllOut(message=f"Triggered {len(triggered)} recurring jobs", triggered=triggered)
