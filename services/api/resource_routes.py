"""Beyond the original demo: users created inline, reports generated in the background, and job status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException
from litestar.openapi.spec import Example
from litestar.params import Body, Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_409_CONFLICT
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arq_mediator import JobHandle, JobStatus, Mediator
from services.api.budget import JobBudget
from services.api.openapi import problems
from services.api.schemas import JobAccepted, JobError, JobOut, NewReport, NewUser
from services.demo.messages import CreateUser, DuplicateEmail, GenerateReport, UserOut
from services.demo.models import User

# The ids of the users table: a 32-bit integer column on PostgreSQL, so larger ids cannot exist.
LARGEST_ID = 2**31 - 1


def status_url(job_id: str) -> str:
    """Return the path at which job *job_id* can be polled."""
    return f"/api/jobs/{job_id}"


@post(
    "/api/users",
    status_code=HTTP_201_CREATED,
    tags=["users"],
    summary="Create a user now (inline, through the same pipeline a worker would run)",
    description="The user's `UserCreated` fans out to a welcome email and an audit record: 2 jobs of the "
    "client's budget. They commit with the user through the transactional outbox, so the user is created "
    "(201) even while Redis is down, and the jobs run once it is back.",
    responses=problems(400, 409, 415, 429, 503),
)
async def create_user(
    request: Request[Any, Any, Any],
    mediator: NamedDependency[Mediator],
    budget: NamedDependency[JobBudget],
    data: Annotated[
        NewUser,
        Body(
            examples=[
                Example(summary="A new user", value={"email": "ada@example.com", "name": "Ada Lovelace"})
            ]
        ),
    ],
) -> UserOut:
    """Create the user inline with `mediator.send`; a taken email is a 409."""
    budget.spend(request, 2)
    try:
        return await mediator.send(CreateUser(email=data.email, name=data.name))
    except DuplicateEmail as error:
        raise HTTPException(status_code=HTTP_409_CONFLICT, detail=str(error)) from None


# The path takes any text and the parameter converts it, so `/api/users/abc` is a 400 naming `user_id`
# rather than a 404 for a route that did not match.
@get("/api/users/{user_id:str}", tags=["users"], summary="Read a user", responses=problems(400, 404, 503))
async def read_user(
    mediator: NamedDependency[Mediator],
    user_id: Annotated[int, Parameter(ge=1, le=LARGEST_ID, description="The user's id")],
) -> UserOut:
    """Return user *user_id* from the database, or 404."""
    sessions: async_sessionmaker[AsyncSession] = mediator.resources[async_sessionmaker]
    async with sessions() as session:
        user = await session.get(User, user_id)
        if user is None:
            raise NotFoundException(f"no user with id {user_id}")
        return UserOut.model_validate(user, from_attributes=True)


@post(
    "/api/reports",
    status_code=HTTP_202_ACCEPTED,
    tags=["reports"],
    summary="Generate a report in the background",
    description="Answers at once with the job id; poll the `Location` (`/api/jobs/{id}`) for the report.",
    response_headers=[
        ResponseHeader(name="Location", description="Where to poll the job", documentation_only=True)
    ],
    responses=problems(400, 415, 429, 503),
)
async def create_report(
    request: Request[Any, Any, Any],
    mediator: NamedDependency[Mediator],
    budget: NamedDependency[JobBudget],
    data: Annotated[
        NewReport,
        Body(
            examples=[Example(summary="A usage report", value={"kind": "usage", "title": "Usage this week"})]
        ),
    ],
) -> Response[JobAccepted]:
    """Enqueue a report; answer 202 with the job id and where to poll it."""
    budget.spend(request, 1)
    handle = await mediator.enqueue(GenerateReport(kind=data.kind, title=data.title))
    url = status_url(handle.id)
    return Response(
        JobAccepted(job_id=handle.id, status_url=url),
        status_code=HTTP_202_ACCEPTED,
        headers={"Location": url},
    )


def _ms(timestamp_ms: int) -> datetime | None:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms else None


@get(
    "/api/jobs/{job_id:str}",
    tags=["jobs"],
    summary="Read a job's status and result",
    responses=problems(400, 404, 503),
)
async def read_job(
    mediator: NamedDependency[Mediator],
    job_id: Annotated[str, Parameter(min_length=1, max_length=200, description="Job id")],
) -> JobOut:
    """Return where job *job_id* stands, with its value or error once finished; 404 when unknown."""
    handle: JobHandle[Any] = mediator.job(job_id)
    status = await handle.status()
    if status is JobStatus.NOT_FOUND:
        raise NotFoundException(f"no job {job_id} is queued, running or finished (results expire)")
    record = await handle.record() if status in (JobStatus.SUCCEEDED, JobStatus.FAILED) else None
    if record is None:
        return JobOut(id=job_id, status=status)
    error = record.error
    return JobOut(
        id=job_id,
        status=status,
        queue=record.queue,
        result=record.value if record.ok else None,
        error=None if error is None else JobError(type=error.type, message=error.message),
        worker=record.worker or None,
        try_number=record.try_number,
        started_at=_ms(record.started_at),
        finished_at=_ms(record.finished_at),
    )
