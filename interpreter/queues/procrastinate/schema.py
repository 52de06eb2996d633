"""Schema set-up: our tables and procrastinate's, once, whichever process starts first.

``python -m interpreter.worker --apply-schema`` does it as a command; every process does it at
start unless ``INTERPRETER_APPLY_SCHEMA=false``. A transaction-scoped advisory lock serialises
processes that start together; both steps are idempotent.
"""

from __future__ import annotations

import procrastinate
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from interpreter.store.sql import create_schema

SCHEMA_LOCK = 0x1A7E_5C4E  # an arbitrary constant: the advisory lock of schema set-up
FINAL_CHANNEL = "interpreter_final"
OUTPUT_CHANNEL = "interpreter_output"

# Every replica learns at once that a job became final (its long polls answer without waiting
# for their next re-read), whoever wrote it: a worker, a cancel, the worker-loss check.
FINAL_TRIGGER = f"""
CREATE OR REPLACE FUNCTION interpreter_notify_final() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{FINAL_CHANNEL}', NEW.id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS interpreter_job_final ON jobs;
CREATE TRIGGER interpreter_job_final AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'timeout', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION interpreter_notify_final();
"""

# Every replica's output streams wake when a worker publishes a running job's output (a batch of
# job_chunks rows: one notice per job and transaction, PostgreSQL folds identical ones) or the
# job starts running.
OUTPUT_TRIGGER = f"""
CREATE OR REPLACE FUNCTION interpreter_notify_output() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{OUTPUT_CHANNEL}', NEW.job_id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS interpreter_job_output ON job_chunks;
CREATE TRIGGER interpreter_job_output AFTER INSERT ON job_chunks
    FOR EACH ROW EXECUTE FUNCTION interpreter_notify_output();
CREATE OR REPLACE FUNCTION interpreter_notify_running() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{OUTPUT_CHANNEL}', NEW.id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS interpreter_job_running ON jobs;
CREATE TRIGGER interpreter_job_running AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.status = 'running' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION interpreter_notify_running();
"""


async def schema_ready(engine: AsyncEngine) -> str | None:
    """None when both schemas are there; else what is missing."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text("SELECT to_regclass('jobs'), to_regclass('procrastinate_jobs')")
            )
        ).one()
    names = ("jobs", "procrastinate_jobs")
    missing = [name for name, present in zip(names, row, strict=True) if not present]
    return f"missing tables: {', '.join(missing)}" if missing else None


async def ensure_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        await conn.run_sync(create_schema)
        await conn.exec_driver_sql(FINAL_TRIGGER)
        await conn.exec_driver_sql(OUTPUT_TRIGGER)
        present = (await conn.execute(sa.text("SELECT to_regclass('procrastinate_jobs')"))).scalar()
        if present is None:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.execute(procrastinate.schema.SchemaManager.get_schema())
