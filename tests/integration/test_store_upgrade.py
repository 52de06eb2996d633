"""A database made by an older version: opening it adds what it lacks, keeping what it holds."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from interpreter.errors import IdempotencyKeyTaken
from interpreter.job import Job, JobRequest, new_job_id
from interpreter.store import SqlStore
from tests.pg import fresh_database

# The jobs table before idempotency keys (its columns as the first scale-out release made them).
OLD_JOBS = """
CREATE TABLE jobs (
    seq {seq} PRIMARY KEY, id VARCHAR(36) NOT NULL UNIQUE, owner VARCHAR(64),
    status VARCHAR(16) NOT NULL, language VARCHAR(64) NOT NULL, request {json} NOT NULL,
    created_at TIMESTAMP NOT NULL, started_at TIMESTAMP, completed_at TIMESTAMP,
    execution_time_ms FLOAT, error_message TEXT, result {json}, worker_id VARCHAR(64),
    worker_host VARCHAR(255), attempts INTEGER DEFAULT 0 NOT NULL, queue_id BIGINT
)"""
OLD_ROW = (
    "INSERT INTO jobs (id, status, language, request, created_at) VALUES "
    "('00000000-0000-4000-8000-000000000000', 'completed', 'python', "
    """'{"code": "print(1)", "timeout_s": 5, "capture_files": true}', '2026-01-01 00:00:00')"""
)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_an_old_database_gets_idempotency_keys_and_keeps_its_jobs(
    kind: str, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            url, store = f"sqlite:///{tmp_path / 'old.db'}", SqlStore.sqlite(tmp_path / "old.db")
            ddl = OLD_JOBS.format(seq="INTEGER", json="JSON")
        else:
            dsn = stack.enter_context(fresh_database())
            url, store = dsn.replace("postgresql://", "postgresql+psycopg://"), None
            ddl = OLD_JOBS.format(seq="BIGSERIAL", json="JSON")
            store = SqlStore.postgres(dsn, pool_size=2)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(ddl))
            conn.execute(sa.text(OLD_ROW))
        engine.dispose()

        await store.open()
        try:
            old = await store.get("00000000-0000-4000-8000-000000000000")
            request = JobRequest(code="print(2)", language="python", timeout_s=5.0)
            await store.create(Job(id=new_job_id(), request=request, idempotency_key=":k"))
            with pytest.raises(IdempotencyKeyTaken):
                await store.create(Job(id=new_job_id(), request=request, idempotency_key=":k"))
        finally:
            await store.close()

    assert old is not None and old.request.code == "print(1)" and old.idempotency_key is None
