"""The dashboard's pages: overview, queues, jobs by state, one job, recurring jobs and workers."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import FromPath
from litestar.response import ServerSentEvent

from ._charts import throughput_chart
from ._live import stream
from ._model import JobDetail, JobState
from ._rendering import HISTORY_TTL, Dashboard

PAGE_SIZE = 50
MAX_PAGE = 100_000
# Longer than any queue, type or id the engine writes; anything longer is refused before Redis sees it.
MAX_NAME = 256
DONE = {
    "requeued": "The job was requeued.",
    "deleted": "The job was deleted.",
    "aborted": "The job is being aborted.",
    "triggered": "The recurring job was triggered.",
}


def job_state(value: str) -> JobState:
    """Return the state *value* names, or raise a 404 naming the states there are."""
    try:
        return JobState(value)
    except ValueError:
        names = ", ".join(state.value for state in JobState)
        raise NotFoundException(detail=f"no job state {value[:MAX_NAME]!r}; the states are {names}") from None


def printable_name(value: str | None, what: str) -> str | None:
    """Return *value* when given and not empty; 400 naming *what* when it is too long or unprintable."""
    if not value:
        return None
    if len(value) > MAX_NAME or not value.isprintable():
        raise ValidationException(detail=f"{what} must be a printable name of at most {MAX_NAME} characters")
    return value


def name_parameter(request: Request[Any, Any, Any], key: str) -> str | None:
    """Return query parameter *key* when given and not empty; 400 when it is too long or unprintable."""
    return printable_name(request.query_params.get(key), f"query parameter {key!r}")


def page_number(request: Request[Any, Any, Any]) -> int:
    """Return the ``page`` query parameter (1 when absent); 400 unless it is a whole number in range."""
    value = request.query_params.get("page")
    if value is None or value == "":
        return 1
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise ValidationException(
            detail=f"query parameter 'page' must be a whole number from 1 to {MAX_PAGE}, not {value[:40]!r}"
        )
    return int(value)


async def known_job(dashboard: Dashboard, job_id: str) -> JobDetail:
    """Return the job *job_id* names; 404 when it cannot be a job id, or no job (or history) has it."""
    if not job_id or len(job_id) > MAX_NAME or not job_id.isprintable():
        raise NotFoundException(detail="no job has this id")
    detail = await dashboard.source.job(job_id)
    if detail is None:
        raise NotFoundException(detail="no job has this id (or its history has expired)")
    return detail


def notice(request: Request[Any, Any, Any]) -> str | None:
    """Return what the last action did, for the page it redirected to."""
    done = request.query_params.get("done", "")
    handled = request.query_params.get("handled", "")
    if done == "bulk" and handled.isdigit():
        return f"{int(handled)} job{'' if int(handled) == 1 else 's'} were handled."
    return DONE.get(done)


@get("/", name="arqm-dashboard:overview", include_in_schema=False)
async def overview(request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]) -> Response[str]:
    """Counts by state, the live per-second graph and the per-hour and per-day history."""
    source = dashboard.source
    counts, seconds, hours, days = await asyncio.gather(
        source.counts(),
        source.throughput("second", 120),
        dashboard.reused("hours", HISTORY_TTL, lambda: source.throughput("hour", 24)),
        dashboard.reused("days", HISTORY_TTL, lambda: source.throughput("day", 7)),
    )
    return dashboard.render(
        request,
        "overview.html",
        title="Overview",
        counts=counts,
        live=throughput_chart("Last two minutes, per second", seconds, "%H:%M:%S"),
        hourly=throughput_chart("Last day, per hour", hours, "%H:00"),
        daily=throughput_chart("Last week, per day", days, "%a %d"),
        notice=notice(request),
    )


@get("/queues", name="arqm-dashboard:queues", include_in_schema=False)
async def queues(request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]) -> Response[str]:
    """Each queue's counts and the workers that serve it."""
    return dashboard.render(request, "queues.html", title="Queues", queues=await dashboard.source.queues())


@get("/jobs/{state_name:str}", name="arqm-dashboard:jobs", include_in_schema=False)
async def jobs(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard], state_name: FromPath[str]
) -> Response[str]:
    """One page of the jobs in *state*, newest first, filtered by queue and request type."""
    wanted = job_state(state_name)
    queue = name_parameter(request, "queue")
    request_type = name_parameter(request, "type")
    number = page_number(request)
    page, (queue_names, types) = await asyncio.gather(
        dashboard.source.jobs(
            wanted,
            queue=queue,
            request_type=request_type,
            offset=(number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        ),
        dashboard.filter_options(),
    )
    last = max((page.total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    return dashboard.render(
        request,
        "jobs.html",
        title=f"Jobs {wanted.value}",
        state=wanted,
        page=page,
        number=number,
        last=last,
        queue=queue,
        request_type=request_type,
        queue_names=queue_names,
        request_types=types,
        notice=notice(request),
    )


@get("/job/{job_id:str}", name="arqm-dashboard:job", include_in_schema=False)
async def job(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard], job_id: FromPath[str]
) -> Response[str]:
    """Everything about one job: payload, outcome, steps, timings, trace, parent, progress and logs."""
    detail = await known_job(dashboard, job_id)
    return dashboard.render(
        request,
        "job.html",
        title=f"Job {detail.summary.id}",
        job=detail,
        trace_link=dashboard.trace_link(detail.trace_id),
        notice=notice(request),
    )


@get("/recurring", name="arqm-dashboard:recurring", include_in_schema=False)
async def recurring(request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]) -> Response[str]:
    """The recurring jobs, their schedules and last outcomes."""
    return dashboard.render(
        request,
        "recurring.html",
        title="Recurring jobs",
        recurring=await dashboard.source.recurring(),
        triggered=name_parameter(request, "job"),
        notice=notice(request),
    )


@get("/workers", name="arqm-dashboard:workers", include_in_schema=False)
async def workers(request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]) -> Response[str]:
    """The live workers."""
    return dashboard.render(
        request, "workers.html", title="Workers", workers=await dashboard.source.workers()
    )


@get("/events", name="arqm-dashboard:events", include_in_schema=False)
async def events(dashboard: NamedDependency[Dashboard]) -> ServerSentEvent:
    """The server-sent events that keep open pages up to date."""
    return ServerSentEvent(stream(dashboard.hub), headers={"Cache-Control": "no-store"})


PAGES = [overview, queues, jobs, job, recurring, workers, events]
