"""The demo's requests, responses and notification: the contract between API, queues and workers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from arq_mediator import Notification, Request


class UserOut(BaseModel):
    """A user as the API returns it."""

    id: int
    email: str
    name: str
    created_at: datetime


class CreateUser(Request[UserOut]):
    """Create a user (queue ``critical``); a taken email is a `DuplicateEmail` error."""

    message_name = "demo.CreateUser"
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field(min_length=1, max_length=200)


class EmailSent(BaseModel):
    """The outcome of one email delivery."""

    recipient: str
    subject: str
    log_id: int


class SendEmail(Request[EmailSent]):
    """Send an email (queue ``emails``); the simulated delivery fails now and then and is retried."""

    message_name = "demo.SendEmail"
    recipient: str = Field(min_length=3, max_length=320)
    subject: str = Field(min_length=1, max_length=300)
    body: str = ""


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
    title: str = Field(default="Performance report", max_length=300)


class CleanupOut(BaseModel):
    """What a cleanup removed."""

    emails_removed: int
    audit_records_removed: int


class Cleanup(Request[CleanupOut]):
    """Remove email logs and audit records older than *older_than_days* (queue ``cleanup``)."""

    message_name = "demo.Cleanup"
    older_than_days: int = Field(default=30, ge=0, le=3650)


class RetryFailedEmails(Request[int]):
    """Re-send recent emails whose delivery failed for good; return how many were queued (recurring)."""

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
