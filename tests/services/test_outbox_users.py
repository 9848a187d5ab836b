"""Creating a user through the API commits the user and its fan-out together (the outbox), Redis or not."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import pytest
from services.demo.models import AuditRecord, EmailAttempt
from services.settings import Settings
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from arq_mediator import ResultRecord
from tests.conftest import StartRedisServer
from tests.jobs.waiting import eventually
from tests.services.api_harness import api_client, on_redis, result_records, running_worker

USERS = 100


async def fan_out_records(redis_url: str) -> list[ResultRecord]:
    """Return the result records of the `UserCreated` jobs (welcome email, audit record) finished so far."""
    return [record for record in await result_records(redis_url) if record.type == "demo.UserCreated"]


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
async def test_with_redis_stopped_users_are_created_and_their_jobs_run_once_when_it_is_back(
    settings: Settings, redis_servers: StartRedisServer, database: str, tmp_path: Path
) -> None:
    """Redis down: 100 POST /api/users all answer 201. Redis back: each welcome email and audit runs once."""
    redis_server = await redis_servers()
    if database == "sqlite":  # the local stack's database: no NOTIFY, the relay polls
        settings = dataclasses.replace(settings, database_url=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    api_settings = on_redis(settings, redis_server.url)
    run = uuid.uuid4().hex[:8]
    emails = [f"outage-{run}-{n}@example.com" for n in range(USERS)]
    async with api_client(api_settings) as client:
        redis_server.stop()
        assert (await client.get("/health")).status_code == 503  # Redis is down indeed
        responses = await asyncio.gather(
            *(
                client.post("/api/users", json={"email": email, "name": f"User {n}"})
                for n, email in enumerate(emails)
            )
        )
        assert [response.status_code for response in responses] == [201] * USERS, responses[0].text
    user_ids = sorted(response.json()["id"] for response in responses)

    redis_server.start()
    await redis_server.ready()
    engine = create_async_engine(settings.database_url)
    audits = select(func.count()).where(
        AuditRecord.event == "user.created", AuditRecord.detail["email"].as_string().in_(emails)
    )
    welcomes = select(func.count()).where(
        EmailAttempt.status == "sent",
        EmailAttempt.delivery_key.in_([f"welcome-{user_id}" for user_id in user_ids]),
    )

    async def counted() -> tuple[int, int]:
        async with engine.connect() as connection:
            return int(await connection.scalar(audits) or 0), int(await connection.scalar(welcomes) or 0)

    async def all_done() -> bool:
        return await counted() == (USERS, USERS)

    async def fan_out_finished() -> bool:
        return len(await fan_out_records(redis_server.url)) >= 2 * USERS

    try:
        async with running_worker(api_settings):
            await eventually(all_done, timeout=120, interval=0.2, what="every welcome email and audit record")
            await eventually(fan_out_finished, timeout=30, interval=0.2, what="every fan-out job's result")
        assert await counted() == (USERS, USERS)  # nothing ran twice, even after the worker drained
    finally:
        await engine.dispose()
    fan_out = await fan_out_records(redis_server.url)
    assert len(fan_out) == 2 * USERS
    assert {record.try_number for record in fan_out} == {1}
    assert all(record.ok for record in fan_out)
