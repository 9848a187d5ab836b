"""The dashboard's actions: requeue, delete or abort one job or all of a state, and trigger a recurring job.

Each is a POST carrying the page's CSRF token; a read-only dashboard refuses them all. An action on many
jobs first answers with a page that says how many it will touch and asks to confirm.
"""

from __future__ import annotations

from typing import Any, Literal, cast
from urllib.parse import quote, urlencode

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.status_codes import HTTP_303_SEE_OTHER, HTTP_409_CONFLICT

from . import _csrf
from ._access import refuse
from ._pages import MAX_NAME, job_state, known_job, printable_name
from ._rendering import ACTIONS, Dashboard

Action = Literal["requeue", "delete", "abort"]
PAST = {"requeue": "requeued", "delete": "deleted", "abort": "aborted"}


async def _form(request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]) -> dict[str, str]:
    """Return the submitted form after checking the dashboard may act and the CSRF token matches."""
    if dashboard.read_only:
        raise refuse("this dashboard is read-only")
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    _csrf.check(request, fields.get(_csrf.FIELD))
    return fields


def _action(value: str) -> Action:
    if value not in PAST:
        raise NotFoundException(
            detail=f"no action {value[:MAX_NAME]!r}; the actions are requeue, delete, abort"
        )
    return cast(Action, value)


def _see(url: str) -> Redirect:
    return Redirect(url, status_code=HTTP_303_SEE_OTHER)


@post("/job/{job_id:str}/{action:str}", name="arqm-dashboard:job-action", include_in_schema=False)
async def job_action(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    job_id: FromPath[str],
    action: FromPath[str],
) -> Response[Any]:
    """Requeue, delete or abort one job, then show its page (or, once deleted, its state's list)."""
    chosen = _action(action)
    await _form(request, dashboard)
    detail = await known_job(dashboard, job_id)
    state = detail.summary.state
    if chosen not in ACTIONS[state]:
        raise ClientException(
            detail=f"a job that is {state.value} cannot be {PAST[chosen]}", status_code=HTTP_409_CONFLICT
        )
    done = await getattr(dashboard.source, chosen)(job_id)
    if not done:
        raise ClientException(
            detail=f"the job could not be {PAST[chosen]}: it changed state meanwhile; reload its page",
            status_code=HTTP_409_CONFLICT,
        )
    if chosen == "delete":
        return _see(f"{dashboard.path}/jobs/{state.value}?done=deleted")
    return _see(f"{dashboard.path}/job/{quote(job_id, safe='')}?done={PAST[chosen]}")


@post("/jobs/{state_name:str}/{action:str}", name="arqm-dashboard:bulk-action", include_in_schema=False)
async def bulk_action(
    request: Request[Any, Any, Any],
    dashboard: NamedDependency[Dashboard],
    state_name: FromPath[str],
    action: FromPath[str],
) -> Response[Any]:
    """Ask to confirm, then requeue, delete or abort every job in *state* (of one queue when given)."""
    chosen = _action(action)
    fields = await _form(request, dashboard)
    wanted = job_state(state_name)
    if chosen not in ACTIONS[wanted]:
        raise ClientException(detail=f"jobs that are {wanted.value} cannot be {PAST[chosen]}")
    queue = printable_name(fields.get("queue"), "field 'queue'")
    if fields.get("confirm") != "yes":
        affected = await dashboard.source.jobs(wanted, queue=queue, limit=1)
        return dashboard.render(
            request,
            "confirm.html",
            title="Confirm",
            state=wanted,
            action=chosen,
            queue=queue,
            affected=affected.total,
        )
    handled = await dashboard.source.bulk(chosen, wanted, queue)
    query = {"done": "bulk", "handled": str(handled), **({"queue": queue} if queue else {})}
    return _see(f"{dashboard.path}/jobs/{wanted.value}?{urlencode(query)}")


@post("/recurring/{name:str}/trigger", name="arqm-dashboard:trigger", include_in_schema=False)
async def trigger(
    request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard], name: FromPath[str]
) -> Response[Any]:
    """Enqueue recurring job *name* now, outside its schedule."""
    await _form(request, dashboard)
    known = {entry.name for entry in await dashboard.source.recurring()}
    if name not in known:
        raise NotFoundException(detail="no recurring job has this name")
    job_id = await dashboard.source.trigger(name)
    return _see(f"{dashboard.path}/recurring?{urlencode({'done': 'triggered', 'job': job_id})}")


ACTION_ROUTES = [job_action, bulk_action, trigger]
