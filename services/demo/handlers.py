"""The demo's handlers, and `build_mediator`, which registers them with their queues and schedules."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arq_mediator import Backoff, Context, Mediator
from arq_mediator.outbox import Outbox
from services.db import OUTBOX, SessionFactory, database_lifespan
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
from services.demo.models import AuditRecord, EmailAttempt, Report, User
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
    """Store a new user with its `UserCreated` fan-out, in one transaction; a taken email: `DuplicateEmail`.

    The fan-out goes through the outbox: the user and its welcome email and audit jobs commit together, so
    neither exists without the other, and creating a user needs no Redis (the jobs follow when it answers).
    """
    await _simulate_work(ctx, 1.6, 5.0)
    async with _sessions(ctx)() as session:
        user = User(email=request.email.lower(), name=request.name)
        session.add(user)
        try:
            await session.flush()  # the id for the event, and the unique email checked, before writing it
        except IntegrityError:
            raise DuplicateEmail(f"a user with email {request.email} exists already") from None
        created = UserOut.model_validate(user, from_attributes=True)
        await ctx.resource(Outbox).enqueue_publish(
            UserCreated(user_id=created.id, email=created.email, name=created.name), session=session
        )
        await session.commit()
    return created


def mail_server_refuses(ctx: Context) -> bool:
    """Return whether the simulated mail server refuses this delivery (about one in nine by default)."""
    return random.random() < ctx.resource(Settings).email_failure_rate


async def send_email(request: SendEmail, ctx: Context) -> EmailSent:
    """Deliver an email (simulated) once per delivery key; a refused try is retried with backoff.

    An email already delivered under its key is not delivered again: a retry after a lost answer, or a
    re-send by the failed-email processor, returns the first delivery.
    """
    key = request.delivery_key or (ctx.job.id if ctx.job else uuid.uuid4().hex)
    async with _sessions(ctx)() as session:
        delivered = await _delivered(session, key)
        if delivered is not None:
            return _email_sent(delivered)
    await _simulate_work(ctx, 1.0, 3.0)
    refused = mail_server_refuses(ctx)
    # Only the last failed try marks the email failed, which is what the processor re-sends.
    last_try = not request.caller_retries if ctx.job is None else ctx.job.try_number >= ctx.job.max_tries
    attempt = EmailAttempt(
        delivery_key=key,
        recipient=request.recipient,
        subject=request.subject,
        status="sent" if not refused else "failed" if last_try else "retrying",
        job_id=ctx.job.id if ctx.job else None,
    )
    async with _sessions(ctx)() as session:
        session.add(attempt)
        try:
            await session.commit()
        except IntegrityError:  # delivered under this key meanwhile, by a job racing this one
            await session.rollback()
            delivered = await _delivered(session, key)
            if delivered is None:
                raise
            return _email_sent(delivered)
    if refused:
        raise EmailDeliveryFailed(f"mail server refused the message to {request.recipient}")
    return _email_sent(attempt)


async def _delivered(session: AsyncSession, key: str) -> EmailAttempt | None:
    found: EmailAttempt | None = await session.scalar(
        select(EmailAttempt).where(EmailAttempt.delivery_key == key, EmailAttempt.status == "sent")
    )
    return found


def _email_sent(attempt: EmailAttempt) -> EmailSent:
    return EmailSent(
        recipient=attempt.recipient,
        subject=attempt.subject,
        attempt_id=attempt.id,
        delivery_key=attempt.delivery_key,
    )


async def generate_report(request: GenerateReport, ctx: Context) -> ReportOut:
    """Compute figures from the app data, store them as a report and return it."""
    await _simulate_work(ctx, 2.0, 5.0)
    async with _sessions(ctx)() as session:
        day_ago = datetime.now(UTC) - timedelta(days=1)
        users = await session.scalar(select(func.count()).select_from(User)) or 0
        new_users = await session.scalar(select(func.count()).where(User.created_at >= day_ago)) or 0
        sent = await session.scalar(select(func.count()).where(EmailAttempt.status == "sent")) or 0
        failed = (
            await session.scalar(select(func.count()).where(EmailAttempt.status.in_(("failed", "requeued"))))
            or 0
        )
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
        emails = await session.execute(delete(EmailAttempt).where(EmailAttempt.created_at < cutoff))
        audits = await session.execute(delete(AuditRecord).where(AuditRecord.created_at < cutoff))
        await session.commit()
    return CleanupOut(emails_removed=emails.rowcount, audit_records_removed=audits.rowcount)  # type: ignore[attr-defined]


async def retry_failed_emails(request: RetryFailedEmails, ctx: Context) -> int:
    """Send again the recent emails whose job failed for good and that were never delivered.

    Each is claimed by moving it from ``failed`` to ``requeued`` in one statement, so two processors
    running at once never both pick it; its new job keeps the email's delivery key and has an id of its
    own making, so neither a processor nor the new job can deliver it twice.
    """
    since = datetime.now(UTC) - timedelta(days=1)
    delivered = select(EmailAttempt.delivery_key).where(EmailAttempt.status == "sent")
    async with _sessions(ctx)() as session:
        candidates = (
            select(EmailAttempt.id)
            .where(
                EmailAttempt.status == "failed",
                EmailAttempt.created_at >= since,
                EmailAttempt.delivery_key.not_in(delivered),
            )
            .order_by(EmailAttempt.id.desc())
            .limit(request.limit)
        )
        claimed = list(
            await session.execute(
                update(EmailAttempt)
                .where(EmailAttempt.id.in_(candidates.scalar_subquery()), EmailAttempt.status == "failed")
                .values(status="requeued")
                .returning(
                    EmailAttempt.id, EmailAttempt.delivery_key, EmailAttempt.recipient, EmailAttempt.subject
                )
                .execution_options(synchronize_session=False)
            )
        )
        await session.commit()
    for attempt_id, key, recipient, subject in claimed:
        await ctx.mediator.enqueue(
            SendEmail(recipient=recipient, subject=subject, delivery_key=key), job_id=f"resend-{attempt_id}"
        )
    return len(claimed)


async def send_welcome_email(event: UserCreated, ctx: Context) -> None:
    """Welcome a new user by email, once per user however often this job or the email is tried."""
    welcome = SendEmail(
        recipient=event.email,
        subject=f"Welcome, {event.name}!",
        delivery_key=f"welcome-{event.user_id}",
        # An inline send does not see this job's tries: tell it whether a refusal will be tried again.
        caller_retries=ctx.job is not None and ctx.job.try_number < ctx.job.max_tries,
    )
    await ctx.mediator.send(welcome)


async def record_user_created(event: UserCreated, ctx: Context) -> None:
    """Keep an audit record of a new user."""
    async with _sessions(ctx)() as session:
        session.add(AuditRecord(event="user.created", detail=event.model_dump()))
        await session.commit()


def build_mediator(settings: Settings) -> Mediator:
    """Return a mediator with every demo handler on its queue, the database lifespan and the schedules."""
    mediator = Mediator(
        redis=settings.redis_url,
        connect_timeout=settings.redis_timeout,
        command_timeout=settings.redis_timeout,
    )
    mediator.provide(settings)
    mediator.provide(Outbox(mediator, OUTBOX))
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
