"""Emails go out once: a retried or re-sent email is not delivered twice (real Redis and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from services.demo import handlers
from services.demo.messages import RetryFailedEmails, SendEmail, UserCreated
from services.demo.models import EmailAttempt
from services.settings import Settings
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arq_mediator import Context, JobFailedError, Worker
from tests.services.api_harness import running_worker


class MailServer:
    """A scripted stand-in for the simulated mail server: refuses the deliveries it is told to."""

    def __init__(self) -> None:
        self.refusals = 0
        self.calls = 0

    def refuses(self, ctx: Context) -> bool:
        """Refuse while refusals are left."""
        self.calls += 1
        if self.refusals:
            self.refusals -= 1
            return True
        return False


@pytest.fixture
def mail_server(monkeypatch: pytest.MonkeyPatch) -> MailServer:
    """Replace the random refusals of the demo's mail server with a script the test sets."""
    server = MailServer()
    monkeypatch.setattr(handlers, "mail_server_refuses", server.refuses)
    return server


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """Run a worker on every demo queue, of a mediator of its own, as a worker process would."""
    async with running_worker(settings) as worker:
        yield worker


async def attempts_to(worker: Worker, recipient: str) -> list[str]:
    """Return the statuses of every delivery attempt to *recipient*, oldest first."""
    sessions: async_sessionmaker[AsyncSession] = worker.mediator.resources[async_sessionmaker]
    async with sessions() as session:
        rows = await session.scalars(
            select(EmailAttempt.status).where(EmailAttempt.recipient == recipient).order_by(EmailAttempt.id)
        )
        return list(rows)


def recipient() -> str:
    """Return an address no other test writes to."""
    return f"once-{uuid.uuid4().hex[:10]}@example.com"


async def test_an_email_delivered_on_a_retry_is_not_sent_again_by_the_processor(
    worker: Worker, mail_server: MailServer
) -> None:
    """A refused first try, delivered on the retry: the failed-email processor then sends nothing more."""
    to = recipient()
    mail_server.refusals = 1

    sent = await (await worker.mediator.enqueue(SendEmail(recipient=to, subject="Hi"))).result(timeout=20)
    resent = await (await worker.mediator.enqueue(RetryFailedEmails())).result(timeout=20)

    assert sent.recipient == to
    assert resent == 0
    assert await attempts_to(worker, to) == ["retrying", "sent"]


async def test_an_email_whose_job_failed_for_good_is_sent_once_by_the_processor(
    worker: Worker, mail_server: MailServer
) -> None:
    """Three refused tries fail the job; the processor re-sends it once, and a second run sends nothing."""
    to = recipient()
    mail_server.refusals = 3

    with pytest.raises(JobFailedError):
        await (await worker.mediator.enqueue(SendEmail(recipient=to, subject="Hi"))).result(timeout=30)
    first = await (await worker.mediator.enqueue(RetryFailedEmails())).result(timeout=20)
    resend = worker.mediator.job(f"resend-{await _requeued_attempt_id(worker, to)}", SendEmail)
    await resend.result(timeout=20)
    second = await (await worker.mediator.enqueue(RetryFailedEmails())).result(timeout=20)

    assert (first, second) == (1, 0)
    assert await attempts_to(worker, to) == ["retrying", "retrying", "requeued", "sent"]


async def _requeued_attempt_id(worker: Worker, to: str) -> int:
    sessions: async_sessionmaker[AsyncSession] = worker.mediator.resources[async_sessionmaker]
    async with sessions() as session:
        found = await session.scalar(
            select(EmailAttempt.id).where(EmailAttempt.recipient == to, EmailAttempt.status == "requeued")
        )
    assert found is not None
    return found


async def test_the_same_delivery_key_delivers_once(worker: Worker, mail_server: MailServer) -> None:
    """Two jobs for one email under one delivery key: the second returns the first delivery."""
    to = recipient()
    email = SendEmail(recipient=to, subject="Hi", delivery_key=f"key-{uuid.uuid4().hex}")

    first = await (await worker.mediator.enqueue(email)).result(timeout=20)
    second = await (await worker.mediator.enqueue(email)).result(timeout=20)

    assert first == second
    assert await attempts_to(worker, to) == ["sent"]
    assert mail_server.calls == 1


async def test_a_welcome_email_retried_with_its_job_goes_out_once(
    worker: Worker, mail_server: MailServer
) -> None:
    """A welcome email refused once is delivered by its job's retry, and the processor leaves it alone."""
    to = recipient()
    mail_server.refusals = 1

    for handle in await worker.mediator.enqueue_publish(
        UserCreated(user_id=10**6, email=to, name="Wel Come")
    ):
        await handle.result(timeout=20)
    resent = await (await worker.mediator.enqueue(RetryFailedEmails())).result(timeout=20)

    assert resent == 0
    assert await attempts_to(worker, to) == ["retrying", "sent"]
