"""The transactional outbox (the ``sqlalchemy`` extra): jobs written in the caller's database transaction.

`Outbox` writes enqueued, deferred and published jobs as rows of `outbox_table`, inside the caller's
`AsyncSession` transaction; `OutboxRelay` moves committed rows to Redis. A rolled-back transaction leaves
no job, a committed one exactly one, whether or not Redis answers at the time.
"""

try:
    import sqlalchemy  # noqa: F401
except ImportError as error:  # pragma: no cover - the extra is installed wherever the tests run
    raise ImportError(
        "arq_mediator.outbox needs SQLAlchemy 2 with asyncio: install arq-mediator[sqlalchemy]"
    ) from error

from ._relay import OutboxRelay, run_relay
from ._table import DEFAULT_TABLE, outbox_table
from ._writer import Outbox

__all__ = ["DEFAULT_TABLE", "Outbox", "OutboxRelay", "outbox_table", "run_relay"]
