"""The writes on a job's critical path (insert, compare-and-set) as plain DBAPI statements: the
SQL is written from the same ``jobs`` table and every value goes through that column's own
SQLAlchemy bind processor for the dialect, so rows read back through SQLAlchemy exactly as if it
had written them (the store contract suite checks it).

Why: on this machine, once the CPU idled for a job's length, a compare-and-set through
SQLAlchemy Core's execution machinery costs ~0.43 ms on SQLite and the same statement on the
DBAPI cursor ~0.18 ms; on PostgreSQL a statement costs 1.76 ms through SQLAlchemy's asyncio layer
and 0.89 ms on psycopg's connection.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.engine import Dialect

from interpreter.job import CapturedOutput, JobStatus, OutputChunk, sources_of
from interpreter.store.tables import job_chunks, job_inputs, job_outputs, jobs

Processors = dict[str, Callable[[Any], Any] | None]
COLUMNS = tuple(column.name for column in jobs.columns)
JobRow = namedtuple("JobRow", COLUMNS)  # type: ignore[misc]  # what _row_to_job reads


def _processors(dialect: Dialect) -> Processors:
    return {
        column.name: column.type.dialect_impl(dialect).bind_processor(dialect)
        for column in jobs.columns
    }


def _result_processors(dialect: Dialect) -> Processors:
    found: Processors = {}
    for column in jobs.columns:
        try:
            found[column.name] = column.type.dialect_impl(dialect).result_processor(dialect, None)
        except TypeError:  # psycopg's numerics want the column's type oid: it returns floats
            found[column.name] = None
    return found


@dataclass(frozen=True)
class PlainWrites:
    """Statements and their parameters for one dialect and its DBAPI's placeholder, and the
    rows they return read as SQLAlchemy would read them."""

    processors: Processors
    results: Processors
    placeholder: str  # "?" (sqlite3) or "%s" (psycopg)

    def row(self, values: Sequence[Any]) -> Any:
        """A ``RETURNING *`` row (columns in table order) with each column's result processor."""
        return JobRow(
            *(
                value
                if value is None or (process := self.results[name]) is None
                else process(value)
                for name, value in zip(COLUMNS, values, strict=True)
            )
        )

    def _bind(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        processor = self.processors[name]
        return processor(value) if processor is not None else value

    def insert(
        self, values: Mapping[str, Any], returning: str | None = None
    ) -> tuple[str, list[Any]]:
        """INSERT one job row (``returning``: a column to return, e.g. ``seq``)."""
        names = list(values)
        sql = (
            f"INSERT INTO {jobs.name} ({', '.join(names)}) "
            f"VALUES ({', '.join(self.placeholder for _ in names)})"
        )
        if returning is not None:
            sql += f" RETURNING {jobs.c[returning].name}"
        return sql, [self._bind(name, values[name]) for name in names]

    def insert_inputs(self, rows: Sequence[Mapping[str, Any]]) -> tuple[str, list[list[Any]]]:
        """INSERT of ``job_inputs`` rows (``sql.input_rows``), for ``executemany``: the
        statement and each row's parameters."""
        names = [column.name for column in job_inputs.columns]
        sql = (
            f"INSERT INTO {job_inputs.name} ({', '.join(names)}) "
            f"VALUES ({', '.join(self.placeholder for _ in names)})"
        )
        return sql, [[row[name] for name in names] for row in rows]

    def upsert_outputs(
        self, job_id: str, outputs: CapturedOutput, expect: Mapping[str, Any] | None = None
    ) -> tuple[str, list[Any]]:
        """A job's outputs, inserted or replaced (SQLite and PostgreSQL say it alike); with
        ``expect``, only while the job's row holds those values (its row locked meanwhile on
        PostgreSQL, so that no compare-and-set on it slips in between)."""
        p = self.placeholder
        where, params = self.expected(job_id, expect)
        lock = " FOR SHARE" if p == "%s" else ""  # SQLite has a single writer
        return (
            f"INSERT INTO {job_outputs.name} (job_id, stdout, stderr) SELECT {p}, {p}, {p} "
            f"WHERE EXISTS (SELECT 1 FROM {jobs.name} WHERE {' AND '.join(where)}{lock}) "
            "ON CONFLICT (job_id) DO UPDATE "
            "SET stdout = excluded.stdout, stderr = excluded.stderr",
            [job_id, outputs.stdout, outputs.stderr, *params],
        )

    def insert_chunks(self, job_id: str, chunks: Sequence[OutputChunk]) -> tuple[str, list[Any]]:
        """A running job's output pieces, in one statement (one transaction: one NOTIFY)."""
        p = self.placeholder
        rows = ", ".join(f"({p}, {p}, {p}, {p})" for _ in chunks)
        params: list[Any] = []
        for chunk in chunks:
            params += [job_id, chunk.stream, chunk.start, chunk.data]
        return f"INSERT INTO {job_chunks.name} (job_id, stream, start, data) VALUES {rows}", params

    def expected(
        self, job_id: str, expect: Mapping[str, Any] | None
    ) -> tuple[list[str], list[Any]]:
        """``id = ?`` and each expected field's condition, with their parameters."""
        p = self.placeholder
        where, params = [f"id = {p}"], [job_id]
        for name, value in (expect or {}).items():
            column = jobs.c[name].name  # an unknown name fails here, as through SQLAlchemy
            if value is None:
                where.append(f"{column} IS NULL")
            else:
                where.append(f"{column} = {p}")
                params.append(self._bind(name, value))
        return where, params

    @staticmethod
    def returning_row(sql: str) -> str:
        """``sql`` returning the whole row, for ``row``."""
        return f"{sql} RETURNING {', '.join(COLUMNS)}"

    def compare_and_set(
        self,
        job_id: str,
        to: JobStatus,
        changes: Mapping[str, Any],
        expect: Mapping[str, Any] | None,
    ) -> tuple[str, list[Any]]:
        """UPDATE ... WHERE id = ? AND status IN (sources of ``to``) [AND expected fields]."""
        p = self.placeholder
        values = {"status": to.value, **changes}
        sources = [s.value for s in sources_of(to)]
        where, expected = self.expected(job_id, expect)
        where.insert(1, f"status IN ({', '.join(p for _ in sources)})")
        params: list[Any] = [self._bind(name, value) for name, value in values.items()]
        params += [job_id, *sources, *expected[1:]]
        assignments = ", ".join(f"{jobs.c[name].name} = {p}" for name in values)
        return f"UPDATE {jobs.name} SET {assignments} WHERE {' AND '.join(where)}", params


def _for(dialect: Dialect, placeholder: str) -> PlainWrites:
    return PlainWrites(_processors(dialect), _result_processors(dialect), placeholder)


SQLITE = _for(sqlite_dialect.dialect(), "?")
POSTGRESQL = _for(psycopg_dialect.dialect(), "%s")  # type: ignore[no-untyped-call]
