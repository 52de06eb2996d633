"""The SQL job store (SQLite through aiosqlite today), on SQLAlchemy 2 Core, async.

Every status change is one ``UPDATE ... WHERE status IN (allowed sources)``: a compare-and-set,
so a late writer can never overwrite a final status. Driver errors become ``StoreError`` here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from interpreter.errors import StoreError
from interpreter.job import Job, JobRequest, JobResult, JobStatus, sources_of, utcnow
from interpreter.store.tables import jobs, metadata


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _row_to_job(row: sa.Row[Any]) -> Job:
    req = row.request
    return Job(
        id=row.id,
        request=JobRequest(
            code=req["code"],
            language=row.language,
            timeout_s=req["timeout_s"],
            capture_files=req["capture_files"],
            working_directory=req.get("working_directory"),
            environment=req.get("environment") or {},
            metadata=req.get("metadata") or {},
        ),
        status=JobStatus(row.status),
        owner=row.owner,
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        execution_time_ms=row.execution_time_ms,
        error_message=row.error_message,
        result=JobResult.from_dict(row.result) if row.result is not None else None,
        seq=row.seq,
    )


def _request_json(request: JobRequest) -> dict[str, Any]:
    data = dataclasses.asdict(request)
    data.pop("language")
    return data


def _values(changes: dict[str, Any]) -> dict[str, Any]:
    values = dict(changes)
    if "result" in values and values["result"] is not None:
        values["result"] = values["result"].to_dict()
    if "status" in values:
        values["status"] = JobStatus(values["status"]).value
    return values


class SqlStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None

    @classmethod
    def sqlite(cls, path: Path) -> SqlStore:
        return cls(f"sqlite+aiosqlite:///{path}")

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("the job store is not open")
        return self._engine

    async def open(self) -> None:
        try:
            # Writes always commit or roll back explicitly, and SQLite opens no transaction for a
            # SELECT, so the pool's reset-on-return round trip is pure cost (~0.5 ms a query).
            engine = create_async_engine(self.url, pool_reset_on_return=None)
            if engine.dialect.name == "sqlite":
                event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            self._engine = engine
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open the job store: {exc}") from exc

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits on success and rolls back on error."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"job store error: {exc.__class__.__name__}: {exc}") from exc

    async def _read(self, query: sa.Executable) -> Sequence[sa.Row[Any]]:
        """One read-only query, without a transaction round trip."""
        try:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
                if conn.in_transaction():
                    await conn.rollback()
                return rows
        except SQLAlchemyError as exc:
            raise StoreError(f"job store error: {exc.__class__.__name__}: {exc}") from exc

    async def create(self, job: Job) -> Job:
        async with self._tx() as conn:
            result = await conn.execute(
                jobs.insert().values(
                    id=job.id,
                    owner=job.owner,
                    status=job.status.value,
                    language=job.request.language,
                    request=_request_json(job.request),
                    created_at=job.created_at,
                )
            )
            seq = result.inserted_primary_key[0] if result.inserted_primary_key else None
        return job.evolve(seq=seq)

    async def get(self, job_id: str) -> Job | None:
        rows = await self._read(jobs.select().where(jobs.c.id == job_id))
        return _row_to_job(rows[0]) if rows else None

    async def transition(self, job_id: str, to: JobStatus, **changes: Any) -> Job | None:
        sources = [s.value for s in sources_of(to)]
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id, jobs.c.status.in_(sources))
                    .values(status=to.value, **_values(changes))
                    .returning(*jobs.c)
                )
            ).first()
        return _row_to_job(row) if row is not None else None

    async def attach_result(
        self, job_id: str, result: JobResult, execution_time_ms: float | None
    ) -> None:
        final = [s.value for s in JobStatus if s.is_final]
        async with self._tx() as conn:
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(final), jobs.c.result.is_(None))
                .values(result=result.to_dict(), execution_time_ms=execution_time_ms)
            )

    async def list(
        self,
        *,
        owner: str | None,
        status: JobStatus | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> Sequence[Job]:
        query = jobs.select().order_by(jobs.c.seq.desc()).limit(limit)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if before_seq is not None:
            query = query.where(jobs.c.seq < before_seq)
        return [_row_to_job(r) for r in await self._read(query)]

    async def pending(self) -> Sequence[Job]:
        query = jobs.select().where(jobs.c.status == JobStatus.PENDING.value).order_by(jobs.c.seq)
        return [_row_to_job(r) for r in await self._read(query)]

    async def fail_running(self, message: str) -> Sequence[str]:
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    jobs.update()
                    .where(jobs.c.status == JobStatus.RUNNING.value)
                    .values(
                        status=JobStatus.FAILED.value,
                        error_message=message,
                        completed_at=utcnow(),
                    )
                    .returning(jobs.c.id)
                )
            ).all()
        return [r.id for r in rows]

    async def expired(self, finished_before: datetime) -> Sequence[Job]:
        final = [s.value for s in JobStatus if s.is_final]
        query = jobs.select().where(jobs.c.status.in_(final), jobs.c.completed_at < finished_before)
        return [_row_to_job(r) for r in await self._read(query)]

    async def delete(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        async with self._tx() as conn:
            await conn.execute(jobs.delete().where(jobs.c.id.in_(list(job_ids))))

    async def count_by_status(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        query = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        for status, count in await self._read(query):
            counts[JobStatus(status)] = count
        return counts

    async def ping(self) -> None:
        await self._read(sa.text("SELECT 1"))
