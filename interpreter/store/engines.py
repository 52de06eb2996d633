"""How the SQL store reaches its database: one operation (a sync function over a SQLAlchemy
``Connection``, inside one transaction) per call, never blocking the event loop.

- ``ThreadedEngine`` (SQLite): a synchronous SQLAlchemy engine driven by one dedicated thread. A
  whole operation (statement + commit) costs one hop to that thread: ~0.1-0.2 ms. Through
  SQLAlchemy's asyncio layer on aiosqlite, every DBAPI call (cursor, execute, fetch, close,
  commit) is a hop of its own: 0.7-1.1 ms an operation measured on this machine, and three
  operations sit between a job's submission and its final status.
- ``AsyncEngineRunner`` (any SQLAlchemy async driver, e.g. PostgreSQL later): the same sync
  functions through ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")
Operation = Callable[[Connection], T]


class SqlRunner(Protocol):
    async def run(self, operation: Operation[T]) -> T:
        """Run ``operation`` in one transaction: committed if it returns, rolled back if not."""

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
    """A sync engine used from one thread only (so one SQLite connection, created there)."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(url)
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    @property
    def dialect_name(self) -> str:
        return self._engine.dialect.name

    def _in_transaction(self, operation: Operation[T]) -> T:
        with self._engine.begin() as conn:
            return operation(conn)

    async def run(self, operation: Operation[T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._in_transaction, operation)

    async def dispose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown(wait=True)


class AsyncEngineRunner:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def dialect_name(self) -> str:
        return self._engine.dialect.name

    async def run(self, operation: Operation[T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(operation)

    async def dispose(self) -> None:
        await self._engine.dispose()
