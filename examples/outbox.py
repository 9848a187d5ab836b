"""The README's outbox example: a user and its welcome job commit together, or neither exists."""

import asyncio
import os
import tempfile

from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from arq_mediator import Context, JobHandle, Mediator, Request, Worker, WorkerSettings
from arq_mediator.outbox import Outbox, OutboxRelay, outbox_table


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)


jobs = outbox_table(Base.metadata)  # created and migrated with your tables


class Welcome(Request[str]):
    email: str


mediator = Mediator(redis=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
outbox = Outbox(mediator, jobs)


@mediator.handler(queue="emails")
async def welcome(request: Welcome, ctx: Context) -> str:
    return f"welcomed {request.email}"


async def sign_up(session: AsyncSession, email: str) -> JobHandle[str]:
    """Store the user and queue its welcome email in one transaction; return the job's handle."""
    async with session.begin():  # commits on the way out: the relay then moves the job to Redis
        session.add(User(email=email))
        return await outbox.enqueue(Welcome(email=email), session=session)  # its id is fixed already


async def main() -> None:
    database = os.path.join(tempfile.mkdtemp(), "app.db")
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")  # PostgreSQL works the same
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with mediator:
        # The relay usually runs inside the workers, as here, or as its own process:
        #   python -m arq_mediator relay examples.outbox:outbox --database-url sqlite+aiosqlite:///app.db
        relay = OutboxRelay(outbox, engine=engine, poll_interval=0.1)
        worker = Worker(mediator, WorkerSettings(queues=["emails"], relay=relay))
        running = asyncio.create_task(worker.run())

        async with sessions() as session:
            handle = await sign_up(session, "ada@example.com")
        try:
            async with sessions() as session:
                await sign_up(session, "ada@example.com")  # the email is taken: rolled back
        except Exception as error:
            print(f"second sign-up rolled back ({type(error).__name__}): no user, no job")

        print(await handle.result(timeout=10))  # waits while the job is on its way from the outbox

        worker.stop()
        await running
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
