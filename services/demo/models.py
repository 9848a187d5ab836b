"""Tables of the demo's app data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Index, Integer, String, TypeDecorator, text
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base


def utc_now() -> datetime:
    """Return the current time, timezone-aware."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time stored in UTC and always read back with its offset, on SQLite as on PostgreSQL.

    SQLite has no time zone type: a plain ``DateTime(timezone=True)`` reads back naive there, which the
    API would then send without an offset (not a valid RFC 3339 ``date-time``).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store *value* in UTC; a naive value is taken to be UTC already."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored time with its UTC offset."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class User(Base):
    """A user; the email is unique, so a second create with it is a domain error."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Room for any address the API accepts (320 characters) after lower-casing, which may lengthen it.
    email: Mapped[str] = mapped_column(String(1280), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class EmailAttempt(Base):
    """One try at delivering an email.

    *status* is ``sent``; ``retrying`` (failed, and the job tries again); ``failed`` (failed on the job's
    last try); or ``requeued`` (a failed one the failed-email processor sent again under the same
    *delivery_key*). At most one attempt per key is ``sent``: the database refuses a second one.
    """

    __tablename__ = "email_attempts"
    __table_args__ = (
        Index(
            "one_sent_attempt_per_delivery_key",
            "delivery_key",
            unique=True,
            sqlite_where=text("status = 'sent'"),
            postgresql_where=text("status = 'sent'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_key: Mapped[str] = mapped_column(String(200), index=True)
    # Room for any address the API accepts (320 characters) after lower-casing, which may lengthen it.
    recipient: Mapped[str] = mapped_column(String(1280))
    subject: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20))
    job_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class Report(Base):
    """A generated report and the figures it computed."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    title: Mapped[str] = mapped_column(String(300))
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)


class AuditRecord(Base):
    """Something that happened, for the audit trail."""

    __tablename__ = "audit_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[str] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
