"""What the API accepts and returns: pydantic models, camelCase on the wire, with OpenAPI examples."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from arq_mediator import JobStatus, Stats
from services.demo.messages import EmailAddress, PersonName, ReportKind, ReportOut, Title, UserOut

ItemKind = Literal["report", "user"]
_JOB_ID = "3f0c9d2be6a54f0b9a2f6c1d7e8a9b10"
_WHEN = "2025-01-31T12:00:00Z"


class ApiModel(BaseModel):
    """Base of the API's responses: snake_case in Python, camelCase in JSON, like the original's."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


class RequestBody(BaseModel):
    """Base of the API's request bodies: an unknown field is a 400, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# Requests ---------------------------------------------------------------------------------------------


class NewUser(RequestBody):
    """A user to create."""

    email: EmailAddress = Field(examples=["ada@example.com"])
    name: PersonName = Field(examples=["Ada Lovelace"])


class NewReport(RequestBody):
    """A report to generate in the background."""

    kind: ReportKind = Field(examples=["performance"])
    title: Title = Field(examples=["Weekly performance report"])


class ErrorOut(BaseModel):
    """Why a request was refused or failed: what was wrong, and for a 400 each field that was."""

    status_code: int | None = Field(default=None, examples=[400])
    detail: str = Field(examples=["Validation failed for POST /api/distributeddemo/stress-test?jobCount=0"])
    extra: Any = Field(
        default=None,
        description="For a 400, one entry per problem: the field's name as sent (`key`), where (`source`) "
        "and what is wrong (`message`)",
        examples=[[{"key": "jobCount", "source": "query", "message": "Expected `int` >= 1"}]],
    )


# Demo endpoints ---------------------------------------------------------------------------------------


class StressTestOut(ApiModel):
    """What a stress test enqueued, per queue."""

    message: str = Field(examples=["Enqueued 100 jobs in one round trip"])
    job_count: int = Field(examples=[100])
    queues: dict[str, int] = Field(
        description="Jobs enqueued per queue",
        examples=[{"cleanup": 40, "emails": 25, "reports": 25, "critical": 10}],
    )
    jobs: list[str] = Field(description="The first 10 job ids", examples=[[_JOB_ID]])
    total_jobs: int = Field(examples=[100])
    timestamp: datetime = Field(examples=[_WHEN])


class JobError(ApiModel):
    """Why a job failed: the remote exception's qualified type name and message."""

    type: str = Field(examples=["services.demo.messages.DuplicateEmail"])
    message: str = Field(examples=["a user with email ada@example.com exists already"])


class MixedItem(ApiModel):
    """One job of a mixed workload and how it ended."""

    index: int = Field(description="Position in the submitted list: reports first, then users", examples=[0])
    kind: ItemKind = Field(examples=["report"])
    job_id: str = Field(examples=[_JOB_ID])
    status: Literal["succeeded", "failed"] = Field(examples=["succeeded"])
    result: ReportOut | UserOut | None = Field(default=None, description="The job's value, when it succeeded")
    error: JobError | None = Field(default=None, description="Why it failed, when it failed")


class PendingItem(ApiModel):
    """A job of a mixed workload still queued or running when the answer was sent."""

    index: int = Field(description="Position in the submitted list: reports first, then users", examples=[3])
    kind: ItemKind = Field(examples=["user"])
    job_id: str = Field(examples=[_JOB_ID])
    status_url: str = Field(description="Where to read its outcome later", examples=[f"/api/jobs/{_JOB_ID}"])


class MixedWorkloadOut(ApiModel):
    """Results of a mixed workload: every item (200), or the finished ones and the pending ones (202)."""

    message: str = Field(examples=["15 of 15 jobs finished: 15 succeeded, 0 failed"])
    report_count: int = Field(examples=[5])
    user_count: int = Field(examples=[10])
    succeeded: int = Field(examples=[15])
    failed: int = Field(examples=[0])
    still_running: int = Field(description="Jobs not finished when the timeout passed", examples=[0])
    elapsed_seconds: float = Field(examples=[4.2])
    items: list[MixedItem] = Field(description="Finished items, in submission order")
    pending: list[PendingItem] = Field(
        default_factory=list, description="Items not finished when the timeout passed, in submission order"
    )


class QueueCounts(ApiModel):
    """Jobs of one queue by state."""

    ready: int = Field(description="Due now, waiting for a worker", examples=[12])
    deferred: int = Field(
        description="Scheduled for later (including retries waiting out a backoff)", examples=[5]
    )
    running: int = Field(description="Claimed by a worker now", examples=[3])
    failed: int = Field(description="Failed for good, kept for inspection", examples=[1])


class WorkerOut(ApiModel):
    """A live worker process, as its last heartbeat described it."""

    name: str = Field(examples=["Worker-1"])
    instance: str = Field(examples=["9c1e2f3a4b5d"])
    host: str = Field(examples=["worker-1"])
    pid: int = Field(examples=[7])
    queues: list[str] = Field(examples=[["critical", "default", "emails", "reports", "cleanup"]])
    max_jobs: int = Field(examples=[20])
    running: int = Field(examples=[3])
    succeeded: int = Field(examples=[250])
    failed: int = Field(examples=[2])
    retried: int = Field(examples=[9])
    started_at: datetime = Field(examples=[_WHEN])
    last_seen: datetime = Field(examples=[_WHEN])


class StatsTotals(ApiModel):
    """Queue counts summed over queues, and the workers' number and capacity."""

    ready: int = Field(examples=[12])
    deferred: int = Field(examples=[5])
    running: int = Field(examples=[3])
    failed: int = Field(examples=[1])
    workers: int = Field(examples=[3])
    capacity: int = Field(description="Jobs the live workers may run at once, summed", examples=[40])


class WorkerStatsOut(ApiModel):
    """Every known queue and live worker, with totals."""

    queues: dict[str, QueueCounts]
    workers: list[WorkerOut]
    totals: StatsTotals
    timestamp: datetime = Field(examples=[_WHEN])

    @classmethod
    def from_stats(cls, stats: Stats, timestamp: datetime) -> WorkerStatsOut:
        """Describe the mediator's *stats*, taken at *timestamp*."""
        totals = stats.totals
        return cls(
            queues={
                queue.name: QueueCounts(
                    ready=queue.ready, deferred=queue.deferred, running=queue.running, failed=queue.failed
                )
                for queue in stats.queues
            },
            workers=[
                WorkerOut(
                    name=worker.name,
                    instance=worker.instance,
                    host=worker.host,
                    pid=worker.pid,
                    queues=worker.queues,
                    max_jobs=worker.max_jobs,
                    running=worker.running,
                    succeeded=worker.succeeded,
                    failed=worker.failed,
                    retried=worker.retried,
                    started_at=_from_ms(worker.started_at),
                    last_seen=_from_ms(worker.last_seen),
                )
                for worker in stats.workers
            ],
            totals=StatsTotals(
                ready=totals["ready"],
                deferred=totals["deferred"],
                running=totals["running"],
                failed=totals["failed"],
                workers=totals["workers"],
                capacity=sum(worker.max_jobs for worker in stats.workers),
            ),
            timestamp=timestamp,
        )


def _from_ms(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


class ScheduledJob(ApiModel):
    """One deferred email of a cascade."""

    job_id: str = Field(examples=[_JOB_ID])
    sequence: int = Field(examples=[1])
    scheduled_at: datetime = Field(examples=[_WHEN])


class ScheduledCascadeOut(ApiModel):
    """The deferred emails of a cascade, in order."""

    message: str = Field(examples=["Scheduled 5 emails 30 s apart"])
    count: int = Field(examples=[5])
    interval_seconds: float = Field(examples=[30.0])
    jobs: list[ScheduledJob]


class TriggeredJob(ApiModel):
    """A recurring job run now."""

    name: str = Field(examples=["daily-cleanup"])
    job_id: str = Field(examples=[f"recurring:daily-cleanup:manual:{_JOB_ID}"])


class TriggerAllOut(ApiModel):
    """The recurring jobs that were enqueued now."""

    message: str = Field(examples=["Triggered 3 recurring jobs"])
    triggered: list[TriggeredJob]


# System -----------------------------------------------------------------------------------------------


class ContainerInfo(ApiModel):
    """Which process answered: its role, host and runtime."""

    role: Literal["api"] = Field(examples=["api"])
    service_name: str = Field(examples=["api"])
    machine_name: str = Field(examples=["api-6f7d9"])
    cpu_count: int = Field(examples=[2])
    python_version: str = Field(examples=["3.12.8"])
    pid: int = Field(examples=[1])
    started_at: datetime = Field(examples=[_WHEN])
    uptime_seconds: float = Field(examples=[3600.5])


class HealthOut(ApiModel):
    """Whether the API's dependencies answer."""

    status: Literal["ok", "unavailable"] = Field(examples=["ok"])
    redis: str = Field(description='"ok", or why Redis is down', examples=["ok"])
    database: str = Field(description='"ok", or why the database is down', examples=["ok"])


# Resources --------------------------------------------------------------------------------------------


class JobAccepted(ApiModel):
    """A job was queued; poll its status at *status_url*."""

    job_id: str = Field(examples=[_JOB_ID])
    status_url: str = Field(examples=[f"/api/jobs/{_JOB_ID}"])


class JobOut(ApiModel):
    """Where a job stands, with its value or error once it finished."""

    id: str = Field(examples=[_JOB_ID])
    status: JobStatus = Field(examples=[JobStatus.SUCCEEDED])
    queue: str | None = Field(default=None, examples=["reports"])
    result: Any = Field(default=None, description="The handler's value as JSON, when it succeeded")
    error: JobError | None = Field(default=None, description="Why it failed, when it failed")
    worker: str | None = Field(
        default=None, description="The worker that finished it", examples=["Worker-3-Heavy"]
    )
    try_number: int | None = Field(default=None, description="The try that finished it", examples=[1])
    started_at: datetime | None = Field(default=None, examples=[_WHEN])
    finished_at: datetime | None = Field(default=None, examples=[_WHEN])
