"""The demo's requests, responses and notification: the contract between API, queues and workers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from arq_mediator import Notification, Request

# Text the database stores: no control characters (PostgreSQL refuses NUL in text, and none of them
# belongs in a name, subject or title). The API's request bodies use the same types, so what the API
# accepts, what its OpenAPI document declares and what the jobs accept cannot drift apart.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
EmailAddress = Annotated[
    str, Field(min_length=3, max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$")
]
PersonName = Annotated[str, Field(min_length=1, max_length=200, pattern=_NO_CONTROL)]
Subject = Annotated[str, Field(min_length=1, max_length=300, pattern=_NO_CONTROL)]
Title = Annotated[str, Field(min_length=1, max_length=300, pattern=_NO_CONTROL)]


class UserOut(BaseModel):
    """A user as the API returns it."""

    id: int
    email: str
    name: str
    created_at: datetime


class CreateUser(Request[UserOut]):
    """Create a user (queue ``critical``); a taken email is a `DuplicateEmail` error."""

    message_name = "demo.CreateUser"
    email: EmailAddress
    name: PersonName


class EmailSent(BaseModel):
    """The outcome of one email delivery; *attempt_id* is the row of the attempt that delivered it."""

    recipient: str
    subject: str
    attempt_id: int
    delivery_key: str


class SendEmail(Request[EmailSent]):
    """Send an email (queue ``emails``) at most once per *delivery_key*; failed tries are retried.

    The key defaults to the job's id, which stays the same across the job's retries. Whoever sends the
    same email again (the failed-email processor) passes the key of the first send, so an email that was
    delivered meanwhile is not delivered twice.
    """

    message_name = "demo.SendEmail"
    recipient: EmailAddress
    subject: Subject
    body: str = ""
    delivery_key: str | None = Field(default=None, min_length=1, max_length=200)
    # Sent inline by a job that will try again if this delivery is refused: the refusal is then not final.
    caller_retries: bool = False


ReportKind = Literal["performance", "usage", "users"]


class ReportOut(BaseModel):
    """A stored report with the figures computed from the database."""

    id: int
    kind: ReportKind
    title: str
    figures: dict[str, int | float | str]
    created_at: datetime


class GenerateReport(Request[ReportOut]):
    """Compute a report from the app data and store it (queue ``reports``)."""

    message_name = "demo.GenerateReport"
    kind: ReportKind = "performance"
    title: Title = "Performance report"


class CleanupOut(BaseModel):
    """What a cleanup removed."""

    emails_removed: int
    audit_records_removed: int


class Cleanup(Request[CleanupOut]):
    """Remove email logs and audit records older than *older_than_days* (queue ``cleanup``)."""

    message_name = "demo.Cleanup"
    older_than_days: int = Field(default=30, ge=0, le=3650)


class RetryFailedEmails(Request[int]):
    """Re-send recent emails whose job failed for good and that were never delivered; return how many."""

    message_name = "demo.RetryFailedEmails"
    limit: int = Field(default=50, ge=1, le=1000)


class UserCreated(Notification):
    """A user was created: fans out to a welcome email and an audit record."""

    message_name = "demo.UserCreated"
    user_id: int
    email: str
    name: str


class DuplicateEmail(Exception):
    """A user with this email exists already: a domain error, never retried."""
