"""Recurring jobs: register requests on cron schedules, trigger them by name, enqueue each tick once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ._cron import CronSchedule
from ._job_builder import build_job, new_job_id
from ._jobs import now_ms
from ._policy import to_seconds
from ._producer import Producer
from ._telemetry import jobs_enqueued, record_failure

if TYPE_CHECKING:
    from datetime import tzinfo

    from ._handle import JobHandle
    from ._messages import Request
    from ._registry import Registry


@dataclass(frozen=True, slots=True)
class RecurringJob:
    """A request enqueued on a cron schedule by the workers, once per tick across all of them."""

    name: str
    request: Request[Any]
    schedule: CronSchedule
    misfire_grace: timedelta | None = None


class RecurringJobs(Producer):
    """The registry of recurring jobs, and their enqueueing: on a tick, or by hand with `trigger`.

    The workers' schedule loop (`_recurring.run_schedules`) calls `enqueue_tick` at each tick.
    """

    def __init__(self, registry: Registry, *, keep_failed: float, max_job_bytes: int) -> None:
        super().__init__(registry, keep_failed=keep_failed, max_job_bytes=max_job_bytes)
        self._recurring: dict[str, RecurringJob] = {}

    def recurring(
        self,
        request: Request[Any],
        *,
        cron: str,
        name: str | None = None,
        tz: str | tzinfo = "UTC",
        misfire_grace: timedelta | float | None = None,
    ) -> RecurringJob:
        """Have the workers enqueue *request* on a *cron* schedule, once per tick across all of them.

        Args:
            request: What to run on each tick.
            cron: A five-field cron expression (or @hourly, @daily, ...).
            name: The schedule's name, for `trigger`; the request type's name by default.
            tz: The time zone the expression is read in.
            misfire_grace: How late a tick missed while no worker ran may still run, once, when a worker
                starts; one interval of the schedule by default, ``0`` never to catch up.

        Raises:
            NoHandlerError: the request type has no handler.
            ValueError: the expression is invalid, or the name is taken.
        """
        self._registry.handler_for(type(request))
        name = name or type(request).message_name
        if name in self._recurring:
            raise ValueError(f"a recurring job named {name!r} is already registered")
        grace = to_seconds(misfire_grace)
        if grace is not None and grace < 0:
            raise ValueError(f"misfire_grace must be zero or more, got {grace} s")
        entry = RecurringJob(
            name=name,
            request=request,
            schedule=CronSchedule(cron, tz),
            misfire_grace=None if grace is None else timedelta(seconds=grace),
        )
        self._recurring[name] = entry
        return entry

    @property
    def recurring_jobs(self) -> dict[str, RecurringJob]:
        """Return the recurring jobs by name."""
        return dict(self._recurring)

    async def trigger(self, name: str) -> JobHandle[Any]:
        """Enqueue recurring job *name* now, besides its schedule.

        Raises:
            KeyError: no recurring job has that name; the message lists the names there are.
        """
        entry = self._recurring.get(name)
        if entry is None:
            raise KeyError(
                f"no recurring job named {name!r}; there are: {', '.join(sorted(self._recurring)) or 'none'}"
            )
        return await self.enqueue(entry.request, job_id=f"recurring:{name}:manual:{new_job_id()}")

    async def enqueue_tick(self, entry: RecurringJob, tick: datetime) -> bool:
        """Enqueue one tick of *entry* under an id fixed by the tick; return whether this call added it."""
        job_id = f"recurring:{entry.name}:{int(tick.timestamp())}"
        spec = self._registry.handler_for(type(entry.request))
        job, span = build_job(
            entry.request,
            spec,
            None,
            job_id,
            None,
            now_ms(),
            0,
            layout=self._layout,
            max_job_bytes=self.max_job_bytes,
        )
        try:
            added = await self._jobs.enqueue_tick(entry.name, int(tick.timestamp() * 1000), job)
        except BaseException as error:
            record_failure(span, error)
            raise
        finally:
            span.end()
        if added:
            jobs_enqueued.add(1, {"messaging.destination.name": job.queue})
        return added
