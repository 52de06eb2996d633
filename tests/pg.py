"""A fresh PostgreSQL database per test on the local server (127.0.0.1:5432, trust auth).

When PostgreSQL is not reachable the tests fail, saying how to start it: they never skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ADMIN_DSN = os.environ.get("INTERPRETER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
HINT = (
    "PostgreSQL is needed at 127.0.0.1:5432 (trust auth, database test): start it with "
    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
    "(.ci/run does this), or point INTERPRETER_TEST_POSTGRES at one"
)


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"{HINT}: {exc}") from exc


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (and its connections) afterwards."""
    name = f"interp_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = ADMIN_DSN.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
