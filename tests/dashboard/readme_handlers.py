"""Stand-ins of the demo's handlers for the README's screenshots: no database; they take time, some fail.

`readme_screenshots` runs them from a copy outside the checkout, so the failed job's traceback in the
screenshot shows that neutral path rather than the folder of whoever made the pictures.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

from services.demo.messages import Cleanup, CleanupOut, EmailSent, GenerateReport, ReportOut, SendEmail

from arq_mediator import Context, Mediator


def register(mediator: Mediator) -> None:
    """Register the stand-ins on *mediator*, with the demo's two recurring jobs."""

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
