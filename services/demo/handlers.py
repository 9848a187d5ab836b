"""The demo's handlers, and `build_mediator`, which registers them with their queues and schedules."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from arq_mediator import Backoff, Context, Mediator
from services.db import SessionFactory, database_lifespan
from services.demo.messages import (
    Cleanup,
    CleanupOut,
    CreateUser,
    DuplicateEmail,
    EmailSent,
    GenerateReport,
    ReportOut,
    RetryFailedEmails,
    SendEmail,
    UserCreated,
    UserOut,
)
from services.demo.models import AuditRecord, EmailLog, Report, User
from services.settings import Settings

# The three recurring jobs of the original, by the names `trigger-all-recurring` fires.
RECURRING = ("daily-cleanup", "hourly-usage-report", "email-queue-processor")


class EmailDeliveryFailed(ConnectionError):
    """The simulated mail server refused the message; worth another try."""


def _sessions(ctx: Context) -> SessionFactory:
    return ctx.resource(async_sessionmaker)


async def _simulate_work(ctx: Context, low: float, high: float) -> None:
    """Take as long as the original's job did (scaled by WORK_SCALE), so the demo's load is realistic."""
    scale = ctx.resource(Settings).work_scale
    if scale > 0:
        await asyncio.sleep(random.uniform(low, high) * scale)


async def create_user(request: CreateUser, ctx: Context) -> UserOut:
    """Store a new user, then announce it; a taken email raises `DuplicateEmail`."""
    await _simulate_work(ctx, 1.6, 5.0)
    async with _sessions(ctx)() as session:
        user = User(email=request.email.lower(), name=request.name)
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:
            raise DuplicateEmail(f"a user with email {request.email} exists already") from None
        created = UserOut.model_validate(user, from_attributes=True)
    await ctx.mediator.enqueue_publish(
        UserCreated(user_id=created.id, email=created.email, name=created.name)
    )
    return created


async def send_email(request: SendEmail, ctx: Context) -> EmailSent:
    """Deliver an email (simulated); about one in nine deliveries fails and is retried with backoff."""
    await _simulate_work(ctx, 1.0, 3.0)
    failed = random.random() < ctx.resource(Settings).email_failure_rate
    async with _sessions(ctx)() as session:
        log = EmailLog(
            recipient=request.recipient,
            subject=request.subject,
            status="failed" if failed else "sent",
            job_id=ctx.job.id if ctx.job else None,
        )
        session.add(log)
        await session.commit()
        if failed:
            raise EmailDeliveryFailed(f"mail server refused the message to {request.recipient}")
        return EmailSent(recipient=request.recipient, subject=request.subject, log_id=log.id)


async def generate_report(request: GenerateReport, ctx: Context) -> ReportOut:
    """Compute figures from the app data, store them as a report and return it."""
    await _simulate_work(ctx, 2.0, 5.0)
    async with _sessions(ctx)() as session:
        day_ago = datetime.now(UTC) - timedelta(days=1)
        users = await session.scalar(select(func.count()).select_from(User)) or 0
        new_users = await session.scalar(select(func.count()).where(User.created_at >= day_ago)) or 0
        sent = await session.scalar(select(func.count()).where(EmailLog.status == "sent")) or 0
        failed = await session.scalar(select(func.count()).where(EmailLog.status == "failed")) or 0
        reports = await session.scalar(select(func.count()).select_from(Report)) or 0
        figures: dict[str, int | float | str] = {
            "users": users,
            "new_users_last_24h": new_users,
            "emails_sent": sent,
            "emails_failed": failed,
            "email_success_rate": round(sent / (sent + failed), 4) if sent + failed else 1.0,
            "reports_before_this": reports,
        }
        report = Report(kind=request.kind, title=request.title, figures=figures)
        session.add(report)
        await session.commit()
        return ReportOut.model_validate(report, from_attributes=True)


async def cleanup(request: Cleanup, ctx: Context) -> CleanupOut:
    """Delete email logs and audit records older than the request says."""
    await _simulate_work(ctx, 2.0, 2.0)
    cutoff = datetime.now(UTC) - timedelta(days=request.older_than_days)
    async with _sessions(ctx)() as session:
        emails = await session.execute(delete(EmailLog).where(EmailLog.created_at < cutoff))
        audits = await session.execute(delete(AuditRecord).where(AuditRecord.created_at < cutoff))
        await session.commit()
    return CleanupOut(emails_removed=emails.rowcount, audit_records_removed=audits.rowcount)  # type: ignore[attr-defined]


async def retry_failed_emails(request: RetryFailedEmails, ctx: Context) -> int:
    """Queue a fresh delivery of the most recent failed emails of the last day."""
    since = datetime.now(UTC) - timedelta(days=1)
    async with _sessions(ctx)() as session:
        rows = await session.scalars(
            select(EmailLog)
            .where(EmailLog.status == "failed", EmailLog.created_at >= since)
            .order_by(EmailLog.id.desc())
            .limit(request.limit)
        )
        failed = list(rows)
        for log in failed:
            log.status = "requeued"
        await session.commit()
    if failed:
        await ctx.mediator.enqueue_many(
            [SendEmail(recipient=log.recipient, subject=log.subject) for log in failed]
        )
    return len(failed)


async def send_welcome_email(event: UserCreated, ctx: Context) -> None:
    """Welcome a new user by email."""
    await ctx.mediator.send(SendEmail(recipient=event.email, subject=f"Welcome, {event.name}!"))


async def record_user_created(event: UserCreated, ctx: Context) -> None:
    """Keep an audit record of a new user."""
    async with _sessions(ctx)() as session:
        session.add(AuditRecord(event="user.created", detail=event.model_dump()))
        await session.commit()


def build_mediator(settings: Settings) -> Mediator:
    """Return a mediator with every demo handler on its queue, the database lifespan and the schedules."""
    mediator = Mediator(redis=settings.redis_url)
    mediator.provide(settings)
    mediator.lifespan(database_lifespan(settings.database_url))
    not_domain_errors = (Exception,)
    mediator.handler(queue="critical", max_tries=3, retry_on=(ConnectionError, OSError))(create_user)
    mediator.handler(
        queue="emails", max_tries=3, retry_on=(EmailDeliveryFailed,), backoff=Backoff(initial=1.0)
    )(send_email)
    mediator.handler(queue="reports", max_tries=2, retry_on=not_domain_errors)(generate_report)
    mediator.handler(queue="cleanup", max_tries=2)(cleanup)
    mediator.handler(queue="emails")(retry_failed_emails)
    mediator.handler(queue="emails", max_tries=3)(send_welcome_email)
    mediator.handler(queue="default", max_tries=3)(record_user_created)
    mediator.recurring(Cleanup(), cron="0 2 * * *", name=RECURRING[0])
    mediator.recurring(
        GenerateReport(kind="usage", title="Hourly usage report"), cron="0 * * * *", name=RECURRING[1]
    )
    mediator.recurring(RetryFailedEmails(), cron="*/2 * * * *", name=RECURRING[2])
    return mediator
