"""How the SQL store reaches its database: one operation (a sync function over a SQLAlchemy
``Connection``, inside one transaction) per call.

- ``ThreadedEngine`` (SQLite, the embedded mode): a synchronous SQLAlchemy engine with two
  connections kept open. Writes run on the event loop itself, on the one writer connection: a
  point write (insert, compare-and-set) costs 0.1-0.5 ms there, where a hop to a thread cost as
  much again (both measured on this machine once the CPU idled for a job's length, the state the
  server is in between a job's start and end). Reads, which may be long (lists, retention), run on
  a dedicated thread's own connection: in WAL mode readers and the writer never block each other.
  The writer never checkpoints inside a commit (``wal_autocheckpoint=0``, so no fsync on the
  loop); the reader thread checkpoints (PASSIVE) every ``CHECKPOINT_EVERY`` writes.
- ``AsyncEngineRunner`` (any SQLAlchemy async driver: PostgreSQL): the same sync functions through
  ``AsyncConnection.run_sync``, reads and writes alike; an operation of one statement runs in
  autocommit, one round trip where BEGIN and COMMIT made it three.

Both take the hot path's statements (insert, compare-and-set, outputs: ``plain_writes``) plain on
the driver's own connection, ``plain_execute``: SQLite's writer cursor inline; PostgreSQL's psycopg
connections of their own, in autocommit (claim 2.9 -> 1.0 ms, final status 2.7 -> 1.4 ms there).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from interpreter.store.plain_writes import POSTGRESQL, SQLITE, PlainWrites

T = TypeVar("T")
Operation = Callable[[Connection], T]

CHECKPOINT_EVERY = 500  # writes between two WAL checkpoints (the default autocheckpoint: ~1000)
# How long the inline writer waits for a lock another process holds (an operator's sqlite3 shell,
# a backup) before the write fails as a StoreError, which callers retry without blocking the loop.
WRITER_BUSY_TIMEOUT_MS = 100


class PlainOutcome(NamedTuple):
    rowcount: int
    row: tuple[Any, ...] | None  # the first row it returned, when asked to fetch


class SqlRunner(Protocol):
    # The hot path: statements built by ``plain`` (None: not on this database), run on the
    # driver's own connection by ``plain_execute``, raising ``plain_errors``.
    plain: PlainWrites | None
    plain_errors: tuple[type[Exception], ...]

    async def plain_execute(self, sql: str, params: Sequence[Any], fetch: bool) -> PlainOutcome:
        """One statement, atomic by itself, without SQLAlchemy's execution machinery."""

    async def open(self) -> None: ...

    async def run(self, operation: Operation[T]) -> T:
        """Run ``operation`` in one transaction: committed if it returns, rolled back if not."""

    async def write(self, operation: Operation[T]) -> T:
        """``run`` for an operation that writes."""

    async def statement(self, operation: Operation[T]) -> T:
        """``write`` for an operation of one statement, atomic by itself: it may run without a
        transaction around it (PostgreSQL: one round trip instead of three)."""

    async def dispose(self) -> None: ...

    @property
    def dialect_name(self) -> str: ...


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class ThreadedEngine:
    """Writes inline on the caller's (event loop) thread, reads on a thread of their own."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(url)
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._reader: Connection | None = None  # used on the thread only
        self._writer: Connection | None = None  # used on the event loop only
        self._writes = 0
        self.plain = SQLITE if self.dialect_name == "sqlite" else None
        self.plain_errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    @property
    def dialect_name(self) -> str:
        return self._engine.dialect.name

    async def open(self) -> None:
        return None

    @staticmethod
    def _transaction(conn: Connection, operation: Operation[T]) -> T:
        with conn.begin():
            return operation(conn)

    def _read(self, operation: Operation[T]) -> T:
        if self._reader is None or self._reader.invalidated:
            self._reader = self._engine.connect()
        return self._transaction(self._reader, operation)

    async def run(self, operation: Operation[T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._read, operation)

    def _writer_connection(self) -> Connection:
        if self._writer is None or self._writer.invalidated:
            self._writer = self._engine.connect()
            if self.dialect_name == "sqlite":  # checkpoints belong to the reader thread
                self._writer.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
                self._writer.exec_driver_sql(f"PRAGMA busy_timeout={WRITER_BUSY_TIMEOUT_MS}")
                self._writer.commit()
        return self._writer

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % CHECKPOINT_EVERY == 0 and self.dialect_name == "sqlite":
            self._thread.submit(self._read, _checkpoint)

    async def write(self, operation: Operation[T]) -> T:
        result = self._transaction(self._writer_connection(), operation)
        self._wrote()
        return result

    async def statement(self, operation: Operation[T]) -> T:
        return await self.write(operation)

    async def plain_execute(self, sql: str, params: Sequence[Any], fetch: bool) -> PlainOutcome:
        """On the writer's DBAPI cursor itself, inline, committed if it succeeds."""
        dbapi = self._writer_connection().connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            cursor.execute(sql, params)
            row = cursor.fetchone() if fetch else None
            outcome = PlainOutcome(cursor.rowcount, row)
            dbapi.commit()
        except BaseException:
            dbapi.rollback()
            raise
        finally:
            cursor.close()
        self._wrote()
        return outcome

    def _close_reader(self) -> None:
        if self._reader is not None:
            _checkpoint(self._reader)
            self._reader.close()
            self._reader = None

    async def dispose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close_reader)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._thread.shutdown(wait=True)
        self._engine.dispose()


def _checkpoint(conn: Connection) -> None:
    conn.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))


class AsyncEngineRunner:
    def __init__(
        self,
        engine: AsyncEngine,
        plain_dsn: str | None = None,
        plain_pool_size: int = 5,
        timeout_s: float = 30.0,
    ) -> None:
        self._engine = engine
        # The same pool; each checkout in autocommit (no BEGIN and COMMIT round trips)
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # PostgreSQL (``plain_dsn``): psycopg connections of their own, in autocommit, for the
        # hot path's statements
        self._pool: AsyncConnectionPool[Any] | None = None
        self.plain: PlainWrites | None = None
        self.plain_errors: tuple[type[Exception], ...] = (psycopg.Error,)
        if plain_dsn is not None:
            self.plain = POSTGRESQL
            self._pool = AsyncConnectionPool(
                plain_dsn,
                min_size=1,
                max_size=plain_pool_size,
                timeout=timeout_s,
                kwargs={"autocommit": True},
                open=False,
            )

    async def open(self) -> None:
        if self._pool is not None:
            await self._pool.open(wait=True, timeout=10)

    async def plain_execute(self, sql: str, params: Sequence[Any], fetch: bool) -> PlainOutcome:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            row = await cursor.fetchone() if fetch else None
            return PlainOutcome(cursor.rowcount, row)

    @property
    def dialect_name(self) -> str:
        return self._engine.dialect.name

    async def run(self, operation: Operation[T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(operation)

    async def write(self, operation: Operation[T]) -> T:
        return await self.run(operation)

    async def statement(self, operation: Operation[T]) -> T:
        async with self._autocommit.connect() as conn:
            return await conn.run_sync(operation)

    async def dispose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        await self._engine.dispose()
