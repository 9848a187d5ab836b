"""The outbox table: one row per job written in a business transaction and not yet relayed to Redis."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, Table, Text, text

DEFAULT_TABLE = "arq_mediator_outbox"
"""The outbox table's name when `outbox_table` is given none (and the relay's default `--table`)."""
# PostgreSQL limits identifiers, the NOTIFY channel (named after the table) included, to 63 bytes.
_MAX_NAME_BYTES = 63


def outbox_table(metadata: MetaData, name: str = DEFAULT_TABLE) -> Table:
    """Define the outbox table in *metadata*, so it is created and migrated with the application's tables.

    Each row holds a job exactly as the producer prepared it (id, queue, JSON envelope with the trace
    context) and its due time. Times are milliseconds since the epoch.

    Args:
        metadata: The application's metadata (``Base.metadata`` of a declarative base, say).
        name: The table's name; on PostgreSQL also the channel the relay is notified on.

    Raises:
        ValueError: *name* is empty, not an identifier, or longer than PostgreSQL allows.
    """
    if not name.replace("_", "a").isalnum() or name[0].isdigit() or len(name.encode()) > _MAX_NAME_BYTES:
        raise ValueError(
            f"the outbox table name must be a plain identifier (letters, digits, _) of at most "
            f"{_MAX_NAME_BYTES} bytes, got {name!r}"
        )
    return Table(
        name,
        metadata,
        # Rows are relayed in this order; SQLite autoincrements only an INTEGER primary key.
        Column(
            "position", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        Column("job_id", Text, nullable=False),
        Column("queue", Text, nullable=False),
        Column("body", Text, nullable=False),
        # When the job may start: the relay pushes it with what is left of its delay, so a job deferred
        # by a minute starts a minute after it was written however late the relay runs.
        Column("due_at", BigInteger, nullable=False),
        Column("created_at", BigInteger, nullable=False),
        # Set when relayed, for rows kept a while after (`OutboxRelay(keep_sent=...)`); else rows are deleted.
        Column("sent_at", BigInteger, nullable=True),
        Index(
            f"{name}_unsent",
            "position",
            postgresql_where=text("sent_at IS NULL"),
            sqlite_where=text("sent_at IS NULL"),
        ),
        Index(f"{name}_sent_at", "sent_at"),
    )
