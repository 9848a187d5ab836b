"""Make the README's two dashboard screenshots (docs/images/): the overview and a failed job's page.

Runs a worker on a private redis-server with stand-ins of the demo's handlers for about half a minute
(some fail), serves the dashboard and photographs it in headless Chromium. Run from the repository root:
``python -m tests.dashboard.readme_screenshots``. Not a test: the browser tests check the pages.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

from services.demo.messages import Cleanup, CleanupOut, EmailSent, GenerateReport, ReportOut, SendEmail

from arq_mediator import Context, Mediator, Worker, WorkerSettings
from arq_mediator.dashboard import JobState, RedisDashboardSource, dashboard_app
from tests.benchmarks.private_redis import private_redis_server
from tests.dashboard.browser import ARTIFACTS, chromium
from tests.dashboard.serving import serving

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
SECONDS = 30


def register(mediator: Mediator) -> None:
    """Register stand-ins of the demo's handlers (no database: they only take time and fail now and then)."""

    @mediator.handler(queue="emails")
    async def send_email(request: SendEmail, ctx: Context) -> EmailSent:
        ctx.logger.info("connecting to the mail relay for %s", request.recipient)
        await asyncio.sleep(random.uniform(0.05, 0.3))
        if random.random() < 0.15:
            ctx.logger.warning("the relay refused %s", request.recipient)
            raise ConnectionRefusedError(f"SMTP relay refused the message to {request.recipient}")
        job = ctx.job.id if ctx.job is not None else "inline"
        return EmailSent(recipient=request.recipient, subject=request.subject, attempt_id=1, delivery_key=job)

    @mediator.handler(queue="reports")
    async def generate_report(request: GenerateReport, ctx: Context) -> ReportOut:
        for step in range(4):
            ctx.progress(step / 4)
            await asyncio.sleep(random.uniform(0.05, 0.2))
        figures: dict[str, int | float | str] = {"orders": random.randint(100, 999)}
        return ReportOut(
            id=1, kind=request.kind, title=request.title, figures=figures, created_at=datetime.now(UTC)
        )

    @mediator.handler(queue="cleanup")
    async def cleanup(request: Cleanup, ctx: Context) -> CleanupOut:
        await asyncio.sleep(0.1)
        return CleanupOut(emails_removed=request.older_than_days, audit_records_removed=0)

    mediator.recurring(Cleanup(older_than_days=30), cron="0 2 * * *", name="daily-cleanup")
    mediator.recurring(
        GenerateReport(kind="usage", title="Usage"), cron="0 * * * *", name="hourly-usage-report"
    )


async def photograph(url: str) -> None:
    """Run jobs for a while, then photograph the overview and a failed job's page."""
    mediator = Mediator(redis=url)
    register(mediator)
    async with mediator:
        worker = Worker(mediator, WorkerSettings(queues=["emails", "reports", "cleanup"], name="Worker-1"))
        running = asyncio.create_task(worker.run())
        for second in range(SECONDS):
            for number in range(random.randint(3, 12)):
                recipient = f"user{second}-{number}@example.com"
                await mediator.enqueue(SendEmail(recipient=recipient, subject="Welcome"))
            if second % 3 == 0:
                await mediator.enqueue(GenerateReport())
            if second % 10 == 0:
                await mediator.enqueue(Cleanup(older_than_days=7))
            await asyncio.sleep(1)
        source = RedisDashboardSource(mediator)
        failed = (await source.jobs(JobState.FAILED, limit=1)).items[0].id
        async with serving(dashboard_app(source)) as port:
            with chromium(f"http://127.0.0.1:{port}") as browser:
                await browser.run(browser.driver.set_window_size, 1280, 800)
                for name, path in (("dashboard-overview", "/"), ("dashboard-failed-job", f"/job/{failed}")):
                    await browser.open(path)
                    await browser.until(lambda _: browser.text("#connection") == "live")
                    shot = await browser.screenshot(name)
                    IMAGES.mkdir(parents=True, exist_ok=True)
                    shutil.copy(shot, IMAGES / shot.name)
                    print(f"saved {IMAGES / shot.name}")
        worker.stop()
        await running


def main() -> None:
    """Start a private redis-server, photograph, stop it."""
    with private_redis_server() as url:
        asyncio.run(photograph(url))
    print(f"(and in {ARTIFACTS})")


if __name__ == "__main__":
    main()
