"""The README's background-jobs example: the same typed request, run by a worker through Redis."""

import asyncio
import os
from datetime import timedelta

from pydantic import BaseModel

from arq_mediator import Context, JobFailedError, Mediator, Request, Worker, WorkerSettings


class Report(BaseModel):
    title: str
    rows: int


class GenerateReport(Request[Report]):
    title: str
    rows: int


class Explode(Request[None]):
    reason: str


mediator = Mediator(redis=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))


@mediator.handler(queue="reports", max_tries=3)  # retried with exponential backoff and jitter
async def generate_report(request: GenerateReport, ctx: Context) -> Report:
    ctx.logger.info("generating %s (try %s)", request.title, ctx.job and ctx.job.try_number)
    return Report(title=request.title, rows=request.rows)


@mediator.handler(queue="reports")
async def explode(request: Explode, ctx: Context) -> None:
    raise ValueError(request.reason)


async def main() -> None:
    async with mediator:  # opens the Redis pool
        # Workers normally run as their own processes:
        #   python -m arq_mediator worker examples.background:mediator --queues reports --max-jobs 5
        # Here one runs in-process so the example is self-contained.
        worker = Worker(mediator, WorkerSettings(queues=["reports"], max_jobs=5))
        running = asyncio.create_task(worker.run())

        job = await mediator.enqueue(GenerateReport(title="usage", rows=3))  # JobHandle[Report]
        report = await job.result(timeout=10)  # pushed on completion, typed as Report
        print(f"job {job.id} on {job.queue}: {report}")

        later = await mediator.defer(GenerateReport(title="later", rows=1), by=timedelta(seconds=0.5))
        print(f"deferred job is {await later.status()}; then {await later.result(timeout=10)}")

        failing = await mediator.enqueue(Explode(reason="disk full"))
        try:
            await failing.result(timeout=10)
        except JobFailedError as error:  # the remote error, as data: type, message, traceback
            print(f"job failed remotely with {error.remote_type}: {error.remote_message}")

        worker.stop()
        await running


if __name__ == "__main__":
    asyncio.run(main())
