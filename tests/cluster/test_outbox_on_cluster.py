"""The transactional outbox on a cluster: rows committed in SQLite are relayed to the queue's node."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker

from arq_mediator.outbox import OutboxRelay
from tests.jobs.conftest import running_worker
from tests.outbox import outbox_app
from tests.outbox.conftest import fresh_table, rows_in

from .deployment import ClusterDeployment


async def test_a_committed_job_is_relayed_to_its_queues_node_and_runs(
    cluster: ClusterDeployment, tmp_path: Path
) -> None:
    """An outbox row's job carries its queue's tag from the start, is pushed by a worker's relay, runs."""
    await cluster.flush()
    mediator, outbox = outbox_app.build(cluster.url())
    async with mediator, fresh_table(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}") as engine:
        async with async_sessionmaker(engine)() as session, session.begin():
            handle = await outbox.enqueue(outbox_app.Echo(text="hello"), session=session, job_id="greeting")
        assert handle.id == "{" + outbox_app.QUEUE + "}greeting"
        relay = OutboxRelay(outbox, engine=engine, poll_interval=0.05)
        async with running_worker(mediator, queues=[outbox_app.QUEUE], relay=relay):
            assert await handle.result(timeout=20) == "HELLO"
        assert await rows_in(engine) == 0
