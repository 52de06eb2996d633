"""Schema set-up on PostgreSQL: idempotent, safe when processes start together, and the trigger
that tells every replica a job became final."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from interpreter.job import Job, JobRequest, JobStatus, new_job_id, utcnow
from interpreter.queues.procrastinate.schema import FINAL_CHANNEL, ensure_schema, schema_ready
from interpreter.store import SqlStore
from interpreter.store.sql import postgres_engine
from tests.pg import fresh_database


@pytest.fixture
async def database() -> AsyncIterator[tuple[str, AsyncEngine]]:
    with fresh_database() as url:
        engine = postgres_engine(url, pool_size=4)
        yield url, engine
        await engine.dispose()


async def test_schema_is_missing_then_set_up_once_by_racing_processes(database) -> None:
    url, engine = database
    assert await schema_ready(engine) == "missing tables: jobs, procrastinate_jobs"

    await asyncio.gather(*(ensure_schema(engine) for _ in range(4)))
    await ensure_schema(engine)  # and again, later: nothing to do

    assert await schema_ready(engine) is None


async def test_a_final_status_is_announced_to_listeners(database) -> None:
    url, engine = database
    await ensure_schema(engine)
    store = SqlStore.from_async_engine(engine, setup=lambda: ensure_schema(engine))
    await store.open()
    job = await store.create(
        Job(id=new_job_id(), request=JobRequest(code="print(1)", language="python", timeout_s=5))
    )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {FINAL_CHANNEL}")
        await store.transition(job.id, JobStatus.RUNNING, started_at=utcnow())
        await store.transition(job.id, JobStatus.COMPLETED, completed_at=utcnow())
        payloads = []
        async for notice in listener.notifies(timeout=5):
            payloads.append(notice.payload)
            break
    assert payloads == [job.id]  # running was not announced; completed was, once
