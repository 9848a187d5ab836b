"""What the browser tests wait for before they load a page: a job the dashboard's store shows in a state."""

from __future__ import annotations

from arq_mediator.dashboard import JobState, RedisDashboardSource


async def in_state(source: RedisDashboardSource, job_id: str, state: JobState) -> bool:
    """Return whether *source* shows job *job_id* in *state* (its history may trail the job's outcome)."""
    detail = await source.job(job_id)
    return detail is not None and detail.summary.state is state
