"""The SQL job store on SQLAlchemy 2 Core: SQLite today, the same tables on PostgreSQL later.

Every status change is one ``UPDATE ... WHERE status IN (allowed sources)``: a compare-and-set,
so a late writer can never overwrite a final status. Each method is one sync operation over a
SQLAlchemy ``Connection``, run by an ``engines.SqlRunner`` (one transaction, one hop off the
event loop). Driver errors become ``StoreError`` here.

Why one module of ~470 lines: the store's contract is one class whose every method is one
compare-and-set or read; the SQL that realises it reads best in one place.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from interpreter.errors import IdempotencyKeyTaken, StoreError
from interpreter.job import (
    CapturedOutput,
    InputFile,
    Job,
    JobRequest,
    JobResult,
    JobStatus,
    OutputChunk,
    sources_of,
    utcnow,
)
from interpreter.jobfiles import FileRow
from interpreter.limits import ResourceLimits
from interpreter.store.base import CHUNK_PAGE, PAGE_SIZE, ExpiredJob, PendingJob
from interpreter.store.engines import (
    AsyncEngineRunner,
    Operation,
    PlainOutcome,
    SqlRunner,
    T,
    ThreadedEngine,
)
from interpreter.store.plain_writes import PlainWrites
from interpreter.store.tables import (
    IDEMPOTENCY_INDEX,
    job_chunks,
    job_files,
    job_inputs,
    job_outputs,
    jobs,
    metadata,
)

DELETE_CHUNK = 200  # jobs deleted in one transaction
FILE_ROWS_CHUNK = 100  # a captured job's files inserted in one statement


def postgres_engine(dsn: str, pool_size: int = 10, timeout_s: float = 30.0) -> AsyncEngine:
    """An async engine on ``postgresql://...`` (libpq form) with psycopg 3; ``timeout_s``: how
    long a checkout waits for a connection (the store's plain pool takes the same)."""
    scheme, _, rest = dsn.partition("://")
    url = f"postgresql+psycopg://{rest}"
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=timeout_s
    )


def _row_to_job(row: Any) -> Job:
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
            limits=ResourceLimits(**req["limits"]) if req.get("limits") else None,
            stdin=req.get("stdin"),
            input_file_count=req.get("input_file_count") or 0,
            packages=tuple(req.get("packages") or ()),
            lock=tuple(req.get("lock") or ()),
            resolve_ms=req.get("resolve_ms"),
            lock_python=req.get("lock_python"),
            session_id=req.get("session_id"),
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
        worker_id=row.worker_id,
        worker_host=row.worker_host,
        attempts=row.attempts,
        queue_id=row.queue_id,
        idempotency_key=row.idempotency_key,
        request_digest=row.request_digest,
    )


def _request_json(request: JobRequest) -> dict[str, Any]:
    data = dataclasses.asdict(request)
    data.pop("language")
    return data


def insert_values(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "owner": job.owner,
        "status": job.status.value,
        "language": job.request.language,
        "request": _request_json(job.request),
        "created_at": job.created_at,
        "attempts": job.attempts,
        "queue_id": job.queue_id,
        "idempotency_key": job.idempotency_key,
        "request_digest": job.request_digest,
    }


def insert_statement(job: Job) -> sa.Insert:
    """The row of a new job (the PostgreSQL queue runs it inside its own transaction)."""
    return jobs.insert().values(**insert_values(job))


def input_rows(job_id: str, inputs: Sequence[InputFile]) -> list[dict[str, Any]]:
    """The ``job_inputs`` rows of a new job's input files, in their order."""
    return [
        {"job_id": job_id, "seq": seq, "path": file.path, "content": file.content}
        for seq, file in enumerate(inputs)
    ]


def add_missing_columns(conn: sa.Connection) -> None:
    """Bring a database made by an older version up to date: add the nullable (or defaulted)
    columns it lacks, then the indexes. Additive only; nothing stored is touched."""
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=conn.dialect)
            server_default = getattr(column.server_default, "arg", None)
            default = f" DEFAULT {server_default}" if server_default is not None else ""
            null = "" if column.nullable else " NOT NULL"
            add = f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{default}{null}'
            conn.execute(sa.text(add))
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def create_schema(conn: sa.Connection) -> None:
    metadata.create_all(conn)
    add_missing_columns(conn)


def key_taken(exc: BaseException) -> bool:
    """Whether ``exc`` (a driver's, or SQLAlchemy's around one) is the unique idempotency key's
    violation: another submission with the key made its job first."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, psycopg.errors.UniqueViolation):
        return cause.diag.constraint_name == IDEMPOTENCY_INDEX
    if isinstance(cause, sqlite3.IntegrityError):
        return "jobs.idempotency_key" in str(cause)
    return False


def describe_db_error(exc: BaseException) -> str:
    """The driver's own words, never SQLAlchemy's rendering of the statement and its parameters
    (they hold the submitted code and environment values, which must reach no log or answer)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, SQLAlchemyError):  # not from the driver: its class says enough
        return cause.__class__.__name__
    return f"{cause.__class__.__name__}: {cause}"


def _values(changes: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(changes)
    if "result" in values and values["result"] is not None:
        values["result"] = values["result"].to_dict()
    if "status" in values:
        values["status"] = JobStatus(values["status"]).value
    return values


def _expected(job_id: str, expect: Mapping[str, Any] | None) -> list[sa.ColumnElement[bool]]:
    """The job's row, holding each expected field's value."""
    conditions = [jobs.c.id == job_id]
    for name, value in (expect or {}).items():
        column = jobs.c[name]
        conditions.append(column.is_(None) if value is None else column == value)
    return conditions


def _private_file(path: Path) -> None:
    """Create the database file readable by the server's user only (SQLite gives its -wal and
    -shm files the same mode)."""
    if path.parent.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        if path.stat().st_uid == os.geteuid():
            path.chmod(0o600)


class SqlStore:
    def __init__(
        self,
        make_runner: Callable[[], SqlRunner],
        description: str,
        setup: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._make_runner = make_runner
        self.description = description
        self._setup = setup  # replaces the plain schema creation (PostgreSQL: under a lock)
        self._runner: SqlRunner | None = None

    @classmethod
    def sqlite(cls, path: Path) -> SqlStore:
        def make() -> ThreadedEngine:
            _private_file(path)
            return ThreadedEngine(f"sqlite:///{path}")

        return cls(make, f"SQLite at {path}")

    @classmethod
    def postgres(cls, dsn: str, pool_size: int = 10) -> SqlStore:
        """PostgreSQL through psycopg 3 (the driver procrastinate uses too)."""
        return cls.from_async_engine(postgres_engine(dsn, pool_size), plain_dsn=dsn)

    @classmethod
    def from_async_engine(
        cls,
        engine: AsyncEngine,
        setup: Callable[[], Awaitable[None]] | None = None,
        plain_dsn: str | None = None,
    ) -> SqlStore:
        """``plain_dsn`` (PostgreSQL): the hot writes as plain psycopg statements."""
        pool = engine.pool
        size, timeout_s = (pool.size(), pool.timeout()) if isinstance(pool, QueuePool) else (5, 30)
        return cls(
            lambda: AsyncEngineRunner(engine, plain_dsn, size, timeout_s),
            engine.url.render_as_string(),
            setup,
        )

    def _plain_row(self, values: tuple[Any, ...]) -> Any:
        assert self._runner is not None and self._runner.plain is not None
        return self._runner.plain.row(values)

    async def _plain(
        self, build: Callable[[PlainWrites], tuple[str, list[Any]]], fetch: bool = False
    ) -> PlainOutcome | None:
        """The statement ``build`` makes for this database, run plain (the hot path); None when
        the database has no plain path (SQLAlchemy's then)."""
        runner = self._runner
        if runner is None or runner.plain is None:
            return None
        sql, params = build(runner.plain)
        try:
            return await runner.plain_execute(sql, params, fetch)
        except runner.plain_errors as exc:
            if key_taken(exc):
                raise IdempotencyKeyTaken() from exc
            raise StoreError(f"job store error: {describe_db_error(exc)}") from exc

    async def open(self) -> None:
        try:
            self._runner = self._make_runner()
            await self._runner.open()
            if self._setup is not None:
                await self._setup()
            else:
                await self._runner.write(create_schema)
        except (SQLAlchemyError, OSError, psycopg.Error) as exc:
            raise StoreError(
                f"cannot open the job store ({self.description}): {describe_db_error(exc)}"
            ) from exc

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.dispose()

    async def _run(self, operation: Operation[T], *, writes: bool = False, one: bool = False) -> T:
        """``writes``: the operation writes; ``one``: it is one statement (atomic by itself)."""
        if self._runner is None:
            raise StoreError("the job store is not open")
        try:
            if one:
                return await self._runner.statement(operation)
            if writes:
                return await self._runner.write(operation)
            return await self._runner.run(operation)
        except SQLAlchemyError as exc:
            if key_taken(exc):
                raise IdempotencyKeyTaken() from exc
            raise StoreError(f"job store error: {describe_db_error(exc)}") from exc

    async def _write(self, operation: Operation[T]) -> T:
        return await self._run(operation, writes=True)

    async def _statement(self, operation: Operation[T]) -> T:
        return await self._run(operation, one=True)

    async def _rows(self, query: sa.Executable, *, one: bool = False) -> Sequence[sa.Row[Any]]:
        return await self._run(lambda conn: conn.execute(query).all(), one=one)

    async def create(self, job: Job, inputs: Sequence[InputFile] = ()) -> Job:
        if inputs:  # the job's row and its files in one transaction
            insert, rows = insert_statement(job), input_rows(job.id, inputs)

            def create(conn: sa.Connection) -> Any:
                keys = conn.execute(insert).inserted_primary_key
                conn.execute(job_inputs.insert(), rows)
                return keys

            keys = await self._write(create)
            return job.evolve(seq=keys[0] if keys else None)
        values = insert_values(job)
        plain = await self._plain(lambda w: w.insert(values, returning="seq"), fetch=True)
        if plain is not None:
            return job.evolve(seq=plain.row[0] if plain.row else None)
        insert = insert_statement(job)
        keys = await self._statement(lambda conn: conn.execute(insert).inserted_primary_key)
        return job.evolve(seq=keys[0] if keys else None)

    async def get(self, job_id: str) -> Job | None:
        rows = await self._rows(jobs.select().where(jobs.c.id == job_id))
        return _row_to_job(rows[0]) if rows else None

    async def find_by_idempotency_key(self, key: str) -> Job | None:
        rows = await self._rows(jobs.select().where(jobs.c.idempotency_key == key))
        return _row_to_job(rows[0]) if rows else None

    async def release_idempotency_key(self, job_id: str) -> None:
        release = jobs.update().where(jobs.c.id == job_id).values(idempotency_key=None)
        await self._statement(lambda conn: conn.execute(release))

    @staticmethod
    def _cas(
        job_id: str, to: JobStatus, changes: dict[str, Any], expect: Mapping[str, Any] | None
    ) -> sa.Update:
        sources = [s.value for s in sources_of(to)]
        conditions = [*_expected(job_id, expect), jobs.c.status.in_(sources)]
        return jobs.update().where(*conditions).values(status=to.value, **_values(changes))

    async def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        expect: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> Job | None:
        values = _values(changes)

        def returning(w: PlainWrites) -> tuple[str, list[Any]]:
            sql, params = w.compare_and_set(job_id, to, values, expect)
            return w.returning_row(sql), params

        plain = await self._plain(returning, fetch=True)
        if plain is not None:
            return _row_to_job(self._plain_row(plain.row)) if plain.row is not None else None
        cas = self._cas(job_id, to, changes, expect).returning(*jobs.c)
        rows = await self._rows(cas, one=True)
        return _row_to_job(rows[0]) if rows else None

    async def compare_and_set(
        self,
        job_id: str,
        to: JobStatus,
        *,
        expect: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> bool:
        values = _values(changes)
        plain = await self._plain(lambda w: w.compare_and_set(job_id, to, values, expect))
        if plain is not None:
            return plain.rowcount == 1
        update = self._cas(job_id, to, changes, expect)
        moved: int = await self._statement(lambda conn: conn.execute(update).rowcount)
        return moved == 1

    async def attach_result(
        self,
        job_id: str,
        result: JobResult,
        execution_time_ms: float | None,
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        final = [s.value for s in JobStatus if s.is_final]
        conditions = [jobs.c.status.in_(final), jobs.c.result.is_(None)]
        update = (
            jobs.update()
            .where(*_expected(job_id, expect), *conditions)
            .values(result=result.to_dict(), execution_time_ms=execution_time_ms)
        )
        moved: int = await self._statement(lambda conn: conn.execute(update).rowcount)
        return moved == 1

    async def put_outputs(
        self,
        job_id: str,
        outputs: CapturedOutput,
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        plain = await self._plain(lambda w: w.upsert_outputs(job_id, outputs, expect))
        if plain is not None:
            return plain.rowcount == 1

        def upsert(conn: sa.Connection) -> int:  # one statement on both dialects
            insert = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
            owned = sa.select(jobs.c.id).where(*_expected(job_id, expect))
            if conn.dialect.name != "sqlite":  # no compare-and-set slips in between
                owned = owned.with_for_update(read=True)
            row = sa.select(
                sa.literal(job_id, job_outputs.c.job_id.type),
                sa.literal(outputs.stdout, job_outputs.c.stdout.type),
                sa.literal(outputs.stderr, job_outputs.c.stderr.type),
            ).where(owned.exists())
            statement = insert(job_outputs).from_select(["job_id", "stdout", "stderr"], row)
            excluded = statement.excluded
            values = {"stdout": excluded.stdout, "stderr": excluded.stderr}
            replace = statement.on_conflict_do_update(
                index_elements=[job_outputs.c.job_id], set_=values
            )
            return len(conn.execute(replace.returning(job_outputs.c.job_id)).all())

        return await self._statement(upsert) == 1

    async def get_outputs(self, job_id: str) -> CapturedOutput | None:
        query = sa.select(job_outputs.c.stdout, job_outputs.c.stderr).where(
            job_outputs.c.job_id == job_id
        )
        rows = await self._rows(query)
        return CapturedOutput(bytes(rows[0].stdout), bytes(rows[0].stderr)) if rows else None

    async def put_files(
        self,
        job_id: str,
        rows: Sequence[FileRow],
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        values = [dataclasses.asdict(row) | {"job_id": job_id} for row in rows]

        def put(conn: sa.Connection) -> bool:
            owned = sa.select(jobs.c.id).where(*_expected(job_id, expect))
            if conn.dialect.name != "sqlite":  # no compare-and-set slips in before the commit
                owned = owned.with_for_update(read=True)
            if conn.execute(owned).first() is None:
                return False
            conn.execute(job_files.delete().where(job_files.c.job_id == job_id))
            for start in range(0, len(values), FILE_ROWS_CHUNK):
                conn.execute(job_files.insert(), values[start : start + FILE_ROWS_CHUNK])
            return True

        return await self._write(put)

    async def list_files(self, job_id: str) -> Sequence[FileRow]:
        columns = [c for c in job_files.c if c.name not in ("job_id", "content")]
        query = sa.select(*columns).where(job_files.c.job_id == job_id)
        return [FileRow(**row._asdict()) for row in await self._rows(query)]

    async def read_file(self, job_id: str, path: str) -> FileRow | None:
        columns = [c for c in job_files.c if c.name != "job_id"]
        query = sa.select(*columns).where(job_files.c.job_id == job_id, job_files.c.path == path)
        rows = await self._rows(query)
        if not rows:
            return None
        row = rows[0]._asdict()
        if row["content"] is not None:
            row["content"] = bytes(row["content"])
        return FileRow(**row)

    async def get_inputs(self, job_id: str) -> Sequence[InputFile]:
        query = (
            sa.select(job_inputs.c.path, job_inputs.c.content)
            .where(job_inputs.c.job_id == job_id)
            .order_by(job_inputs.c.seq)
        )
        return [InputFile(r.path, bytes(r.content)) for r in await self._rows(query)]

    async def delete_inputs(self, job_id: str) -> None:
        delete = job_inputs.delete().where(job_inputs.c.job_id == job_id)
        await self._statement(lambda conn: conn.execute(delete))

    async def add_chunks(self, job_id: str, chunks: Sequence[OutputChunk]) -> None:
        if not chunks:
            return
        if await self._plain(lambda w: w.insert_chunks(job_id, chunks)) is not None:
            return
        rows = [
            {"job_id": job_id, "stream": c.stream, "start": c.start, "data": c.data} for c in chunks
        ]
        # one transaction: the database announces the job once (NOTIFY, schema.OUTPUT_TRIGGER)
        await self._write(lambda conn: conn.execute(job_chunks.insert(), rows).rowcount)

    async def get_chunks(
        self, job_id: str, stdout_from: int, stderr_from: int, limit: int = CHUNK_PAGE
    ) -> Sequence[OutputChunk]:
        c = job_chunks.c
        end = c.start + sa.func.length(c.data)
        query = (
            sa.select(c.stream, c.start, c.data)
            .where(
                c.job_id == job_id,
                sa.or_(
                    sa.and_(c.stream == "stdout", end > stdout_from),
                    sa.and_(c.stream == "stderr", end > stderr_from),
                ),
            )
            .order_by(c.stream, c.start, c.seq)
            .limit(limit)
        )
        return [OutputChunk(r.stream, r.start, bytes(r.data)) for r in await self._rows(query)]

    async def delete_chunks(self, job_id: str) -> None:
        delete = job_chunks.delete().where(job_chunks.c.job_id == job_id)
        await self._statement(lambda conn: conn.execute(delete).rowcount)

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
        return [_row_to_job(r) for r in await self._rows(query)]

    async def pending_ids(
        self, *, after_seq: int = 0, limit: int = PAGE_SIZE
    ) -> Sequence[PendingJob]:
        query = (
            sa.select(jobs.c.id, jobs.c.owner, jobs.c.seq)
            .where(jobs.c.status == JobStatus.PENDING.value, jobs.c.seq > after_seq)
            .order_by(jobs.c.seq)
            .limit(limit)
        )
        return [PendingJob(r.id, r.owner, r.seq) for r in await self._rows(query)]

    async def fail_running(self, message: str) -> Sequence[str]:
        update = (
            jobs.update()
            .where(jobs.c.status == JobStatus.RUNNING.value)
            .values(status=JobStatus.FAILED.value, error_message=message, completed_at=utcnow())
            .returning(jobs.c.id)
        )
        return [r.id for r in await self._rows(update, one=True)]

    async def expired(
        self, finished_before: datetime, *, after_seq: int = 0, limit: int = PAGE_SIZE
    ) -> Sequence[ExpiredJob]:
        final = [s.value for s in JobStatus if s.is_final]
        # One key of the request, extracted by the database (json_extract on SQLite, ->> on
        # PostgreSQL): the code never leaves it.
        directory = jobs.c.request["working_directory"].as_string().label("directory")
        query = (
            sa.select(jobs.c.id, directory, jobs.c.seq)
            .where(
                jobs.c.status.in_(final),
                jobs.c.completed_at < finished_before,
                jobs.c.seq > after_seq,
            )
            .order_by(jobs.c.seq)
            .limit(limit)
        )
        return [ExpiredJob(r.id, r.directory, r.seq) for r in await self._rows(query)]

    async def delete(self, job_ids: Sequence[str]) -> None:
        ids = list(job_ids)
        for start in range(0, len(ids), DELETE_CHUNK):  # short writes: the writer may be inline
            chunk = ids[start : start + DELETE_CHUNK]

            def delete(conn: sa.Connection, chunk: list[str] = chunk) -> None:
                conn.execute(job_outputs.delete().where(job_outputs.c.job_id.in_(chunk)))
                conn.execute(job_files.delete().where(job_files.c.job_id.in_(chunk)))
                conn.execute(job_inputs.delete().where(job_inputs.c.job_id.in_(chunk)))
                conn.execute(job_chunks.delete().where(job_chunks.c.job_id.in_(chunk)))
                conn.execute(jobs.delete().where(jobs.c.id.in_(chunk)))

            await self._write(delete)

    async def count_by_status(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        query = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        for row in await self._rows(query):
            status, count = tuple(row)
            counts[JobStatus(status)] = int(count)
        return counts

    async def ping(self) -> None:
        await self._rows(sa.text("SELECT 1"))
