"""The two writes on a job's critical path (insert, compare-and-set), as plain DBAPI calls on
SQLite: the SQL is written from the same ``jobs`` table and every value goes through that
column's own SQLAlchemy bind processor, so rows read back through SQLAlchemy exactly as if it had
written them (the store contract suite checks it).

Why: on this machine, once the CPU idled for a job's length, a compare-and-set through
SQLAlchemy Core's execution machinery costs ~0.43 ms and the same statement on the DBAPI cursor
~0.18 ms; a job's life holds three such writes between its submission and its final status.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect

from interpreter.job import JobStatus, sources_of
from interpreter.store.tables import jobs

_DIALECT = sqlite_dialect.dialect()
_PROCESSORS: dict[str, Callable[[Any], Any] | None] = {
    column.name: column.type.bind_processor(_DIALECT) for column in jobs.columns
}


def _bind(name: str, value: Any) -> Any:
    if value is None:
        return None
    processor = _PROCESSORS[name]
    return processor(value) if processor is not None else value


def insert(cursor: sqlite3.Cursor, values: Mapping[str, Any]) -> int | None:
    """INSERT one job row; returns its ``seq``."""
    names = list(values)
    sql = (
        f"INSERT INTO {jobs.name} ({', '.join(names)}) "
        f"VALUES ({', '.join('?' for _ in names)})"
    )
    cursor.execute(sql, [_bind(name, values[name]) for name in names])
    return cursor.lastrowid


def compare_and_set(
    cursor: sqlite3.Cursor,
    job_id: str,
    to: JobStatus,
    changes: Mapping[str, Any],
    expect: Mapping[str, Any] | None,
) -> bool:
    """UPDATE ... WHERE id = ? AND status IN (sources of ``to``) [AND expected fields]."""
    values = {"status": to.value, **changes}
    sources = [s.value for s in sources_of(to)]
    where = ["id = ?", f"status IN ({', '.join('?' for _ in sources)})"]
    params: list[Any] = [_bind(name, value) for name, value in values.items()]
    params += [job_id, *sources]
    for name, value in (expect or {}).items():
        jobs.c[name]  # an unknown name fails here, as it does through SQLAlchemy
        if value is None:
            where.append(f"{name} IS NULL")
        else:
            where.append(f"{name} = ?")
            params.append(_bind(name, value))
    sql = (
        f"UPDATE {jobs.name} SET {', '.join(f'{name} = ?' for name in values)} "
        f"WHERE {' AND '.join(where)}"
    )
    cursor.execute(sql, params)
    return cursor.rowcount == 1
