"""The outbox's edges: its command line, its settings, the clear errors of a relay or writer set up wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from arq_mediator import JobStatus, Mediator, MissingResourceError, QueueNotConnectedError
from arq_mediator._cli import load_relay, main, parse
from arq_mediator.outbox import DEFAULT_TABLE, Outbox, OutboxRelay, outbox_table
from tests.jobs.conftest import running_worker
from tests.jobs.waiting import FAST, eventually
from tests.processes import ManagedProcesses

from . import outbox_app
from .conftest import fresh_table, rows_in
from .outbox_app import Echo

relay = OutboxRelay(outbox_app.outbox, batch_size=5)
other_outbox = Outbox(Mediator(), outbox_app.table)
not_an_outbox = "a string"
OTHER = f"{__name__}:other_outbox"


def test_the_relay_command_reads_its_options() -> None:
    """Database URL, table, batch size, poll interval and kept time come from the command line."""
    options = parse(["relay", "app:outbox", "--database-url", "sqlite+aiosqlite://", "--batch-size", "7"])
    assert (options.outbox, options.database_url, options.batch_size) == (
        "app:outbox",
        "sqlite+aiosqlite://",
        7,
    )
    assert (options.table, options.poll_interval, options.keep_sent) == (None, 1.0, 0.0)


def test_a_relay_of_an_outbox_takes_the_command_line_settings() -> None:
    """`relay module:outbox` relays that outbox's table with the batch size and intervals given."""
    options = parse(["relay", "x:y", "--batch-size", "9", "--poll-interval", "0.5", "--keep-sent", "60"])
    loaded = load_relay("tests.outbox.outbox_app:outbox", options)
    assert loaded.outbox is outbox_app.outbox
    assert (loaded.batch_size, loaded.poll_interval, loaded.keep_sent) == (9, 0.5, 60.0)


def test_a_relay_of_a_mediator_uses_the_default_table_or_the_one_named() -> None:
    """`relay module:mediator` relays the mediator's outbox in the default table, or in --table."""
    default = load_relay("tests.outbox.outbox_app:mediator", parse(["relay", "x:y"]))
    assert (default.outbox.mediator, default.outbox.table.name) == (outbox_app.mediator, DEFAULT_TABLE)
    named = load_relay("tests.outbox.outbox_app:mediator", parse(["relay", "x:y", "--table", "jobs_out"]))
    assert named.outbox.table.name == "jobs_out"


@pytest.mark.parametrize(
    ("arguments", "durable"), [([], None), (["--durable"], True), (["--no-durable"], False)]
)
def test_the_relay_command_sets_durability_or_follows_the_mediator(
    arguments: list[str], durable: bool | None
) -> None:
    """`--durable` / `--no-durable` become the relay's ``durable``; without either it follows the mediator."""
    for path in ("tests.outbox.outbox_app:outbox", "tests.outbox.outbox_app:mediator"):
        assert load_relay(path, parse(["relay", "x:y", *arguments])).durable is durable


def test_a_relay_object_refuses_durable_from_the_command_line() -> None:
    """An OutboxRelay made in code keeps its own durability: `--durable` on it is refused, not ignored."""
    with pytest.raises(SystemExit, match="its durability is set in code"):
        load_relay(f"{__name__}:relay", parse(["relay", "x:y", "--durable"]))


async def test_a_durable_relay_process_keeps_rows_no_replica_confirmed(
    app: tuple[Mediator, Outbox], redis_url: str, tmp_path: Path
) -> None:
    """`relay --durable` on a Redis with no replica leaves the row in the table; `--no-durable` relays it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    async with fresh_table(url) as engine:
        async with async_sessionmaker(engine)() as session, session.begin():
            handle = await app[1].enqueue(Echo(text="replicated"), session=session)
        processes = ManagedProcesses(tmp_path)
        environment = {**os.environ, outbox_app.URL_ENV: redis_url, "PYTHONUNBUFFERED": "1"}
        command = ["-m", "arq_mediator", "relay", "tests.outbox.outbox_app:outbox", "--database-url", url]
        try:
            durable = processes.start("durable", [*command, "--durable"], environment)
            await durable.printed("NotReplicatedError", timeout=60)
            assert await rows_in(engine) == 1
            assert await handle.status() is JobStatus.QUEUED  # pushed, but not known to be replicated
            assert await durable.stop() == 0
            plain = processes.start("plain", [*command, "--no-durable"], environment)
            await eventually(lambda: _no_rows(engine), timeout=60, what="the row relayed without WAIT")
            assert await plain.stop() == 0
        finally:
            processes.stop_all()


async def _no_rows(engine: AsyncEngine) -> bool:
    return await rows_in(engine) == 0


def test_a_relay_object_is_used_as_it_is() -> None:
    """`relay module:relay` runs that OutboxRelay, configured in code."""
    assert load_relay(f"{__name__}:relay", parse(["relay", "x:y"])) is relay


@pytest.mark.parametrize(
    ("path", "arguments", "message"),
    [
        (f"{__name__}:not_an_outbox", [], "is a str, not an arq_mediator Mediator, Outbox or OutboxRelay"),
        ("tests.outbox.outbox_app:outbox", ["--table", "t"], "--table is for a Mediator"),
        ("tests.outbox.outbox_app:outbox", ["--database-url", "not a url"], "invalid --database-url"),
        (
            "tests.outbox.outbox_app:outbox",
            ["--database-url", "postgresql+nodriver://h/d"],
            "invalid --database-url",
        ),
        ("tests.outbox.outbox_app:outbox", ["--batch-size", "0"], "invalid relay settings: batch_size"),
        ("tests.outbox.outbox_app:outbox", ["--poll-interval", "0"], "invalid relay settings: poll_interval"),
        (
            "tests.outbox.outbox_app:mediator",
            ["--table", "no-dashes"],
            "invalid relay settings: the outbox table",
        ),
    ],
)
def test_the_relay_command_explains_what_is_wrong(path: str, arguments: list[str], message: str) -> None:
    """Something that is not an outbox, a --table an Outbox fixes already, or bad numbers exit with why."""
    with pytest.raises(SystemExit, match=message):
        load_relay(path, parse(["relay", "x:y", *arguments]))


def test_a_worker_refuses_to_relay_another_mediators_outbox() -> None:
    """`worker a:mediator --relay b:outbox` with an outbox of another mediator exits before starting."""
    with pytest.raises(SystemExit, match="belongs to another mediator"):
        main(
            [
                "worker",
                "tests.outbox.outbox_app:mediator",
                "--queues",
                "q",
                "--relay",
                f"{__name__}:other_outbox",
            ]
        )


def test_the_relay_command_shows_its_usage() -> None:
    """`python -m arq_mediator relay --help` describes the relay's options."""
    completed = subprocess.run(
        [sys.executable, "-m", "arq_mediator", "relay", "--help"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0
    assert "--database-url" in completed.stdout


def test_importing_the_library_does_not_import_sqlalchemy() -> None:
    """SQLAlchemy is an extra: `import arq_mediator` (workers, mediator) never loads it."""
    code = "import sys, arq_mediator, arq_mediator.litestar; print('sqlalchemy' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["", "1st", "has-dash", "x" * 64, 'quo"te'])
def test_an_outbox_table_needs_a_plain_identifier(name: str) -> None:
    """The name doubles as a PostgreSQL NOTIFY channel: only a plain identifier of at most 63 bytes."""
    with pytest.raises(ValueError, match="plain identifier"):
        outbox_table(MetaData(), name)


@pytest.mark.parametrize(
    "settings",
    [{"batch_size": 0}, {"poll_interval": 0.0}, {"keep_sent": -1.0}],
    ids=["batch", "poll", "keep"],
)
def test_relay_settings_are_checked(settings: dict[str, float]) -> None:
    """A batch below 1, a poll interval of zero or less, or a negative keep_sent is refused when built."""
    with pytest.raises(ValueError, match="must be"):
        OutboxRelay(outbox_app.outbox, **settings)  # type: ignore[arg-type]


async def test_writing_needs_an_open_mediator_and_writes_nothing_without_one(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """An outbox of a mediator never opened refuses at once, before a row is written."""
    closed_mediator, outbox = outbox_app.build("redis://127.0.0.1:1/0")
    async with sessions() as session, session.begin():
        with pytest.raises(QueueNotConnectedError):
            await outbox.enqueue(Echo(text="x"), session=session)
        with pytest.raises(QueueNotConnectedError):
            await outbox.enqueue_publish(outbox_app.Signed(name="x"), session=session)
    assert await rows_in(engine) == 0
    del closed_mediator


async def test_a_relay_without_a_database_says_how_to_give_it_one(redis_url: str) -> None:
    """No engine given and none provided by the mediator's lifespans: the relay names both ways to fix it."""
    mediator, outbox = outbox_app.build(redis_url)
    async with mediator:
        with pytest.raises(MissingResourceError, match=r"mediator\.provide"):
            _ = OutboxRelay(outbox).engine


async def test_a_worker_logs_a_relay_that_cannot_run(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose relay stops on a configuration error logs why, and keeps running jobs."""
    mediator, outbox = outbox_app.build(redis_url)
    async with (
        mediator,
        running_worker(mediator, queues=[outbox_app.QUEUE], relay=OutboxRelay(outbox), **FAST),
    ):
        await eventually(lambda: "its outbox relay stopped" in caplog.text, timeout=10)
        handle = await mediator.enqueue(Echo(text="still works"))
        assert await handle.result(timeout=20) == "STILL WORKS"
    assert "MissingResourceError" in caplog.text


async def test_the_relay_takes_the_engine_the_mediator_provides(
    redis_url: str, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A relay given no engine uses the `AsyncEngine` resource (as the demo's database lifespan provides)."""
    mediator, outbox = outbox_app.build(redis_url)
    mediator.provide(engine, as_type=AsyncEngine)
    async with mediator:
        async with sessions() as session, session.begin():
            await outbox.enqueue(Echo(text="x"), session=session)
        assert await OutboxRelay(outbox).relay_batch() == 1
    async with engine.connect() as connection:
        assert (await connection.execute(select(outbox_app.table.c.job_id))).first() is None


async def test_a_write_the_database_refuses_raises_its_error(
    app: tuple[Mediator, Outbox], tmp_path: Path
) -> None:
    """An outbox whose table was never created raises the database's own error; the caller rolls back."""
    _, outbox = app
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        async with async_sessionmaker(engine)() as session:
            with pytest.raises(OperationalError, match="no such table"):
                await outbox.enqueue(Echo(text="x"), session=session)
            await session.rollback()
    finally:
        await engine.dispose()
