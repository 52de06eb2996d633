"""Configuration of the scale-out: clear refusals for what cannot work, and the worker command's
schema set-up and check against a real (fresh) PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from interpreter.config import Settings
from tests.pg import fresh_database

REPO = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_database_url_kinds() -> None:
    assert Settings().database_kind == "sqlite"
    sqlite = Settings(database_url="sqlite:////tmp/x/jobs.db")
    assert sqlite.database_kind == "sqlite" and str(sqlite.database_path) == "/tmp/x/jobs.db"
    pg = Settings(database_url="postgres://u@db:5432/jobs")
    assert (
        pg.database_kind == "postgresql"
        and pg.postgres_dsn == "postgresql://u@db:5432/jobs?connect_timeout=30"
    )
    with pytest.raises(ValidationError, match="must start with sqlite:/// or postgresql://"):
        Settings(database_url="mysql://u@db/jobs")
    with pytest.raises(ValidationError, match="LOST_AFTER must be longer"):
        Settings(worker_heartbeat_s=5, worker_lost_after_s=5)


def test_the_server_refuses_an_unknown_database_url_saying_why(tmp_path: Path) -> None:
    done = run_module(
        "interpreter.server",
        INTERPRETER_DATABASE_URL="mysql://u@db/jobs",
        INTERPRETER_DATA_DIR=str(tmp_path),
    )
    assert done.returncode == 2
    assert "INTERPRETER_DATABASE_URL must start with sqlite:/// or postgresql://" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_worker_needs_postgresql(tmp_path: Path) -> None:
    done = run_module("interpreter.worker", INTERPRETER_DATA_DIR=str(tmp_path))
    assert done.returncode == 2
    assert "a worker needs the shared queue: set INTERPRETER_DATABASE_URL=postgresql" in done.stderr


def test_worker_check_and_apply_schema_on_a_fresh_database(tmp_path: Path) -> None:
    with fresh_database() as url:
        env = {"INTERPRETER_DATABASE_URL": url, "INTERPRETER_DATA_DIR": str(tmp_path)}
        before = run_module("interpreter.worker", "--check", **env)
        assert before.returncode == 1
        assert "not ready: missing tables: jobs, procrastinate_jobs" in before.stderr

        assert run_module("interpreter.worker", "--apply-schema", **env).returncode == 0
        after = run_module("interpreter.worker", "--check", **env)
        assert after.returncode == 0, after.stderr


def test_worker_check_reports_an_unreachable_database_without_a_traceback(
    tmp_path: Path,
) -> None:
    done = run_module(
        "interpreter.worker",
        "--check",
        INTERPRETER_DATABASE_URL="postgresql://postgres@127.0.0.1:1/none",
        INTERPRETER_DATA_DIR=str(tmp_path),
    )
    assert done.returncode == 1
    assert "cannot reach the database" in done.stderr and "Traceback" not in done.stderr


def test_a_server_without_schema_set_up_refuses_when_told_not_to_apply_it(tmp_path: Path) -> None:
    with fresh_database() as url:
        done = run_module(
            "interpreter.server",
            INTERPRETER_DATABASE_URL=url,
            INTERPRETER_APPLY_SCHEMA="false",
            INTERPRETER_SANDBOX="none",
            INTERPRETER_PORT="0",
            INTERPRETER_DATA_DIR=str(tmp_path),
        )
    assert done.returncode != 0
    assert "refusing to start" in done.stderr
    assert "the database has no schema (missing tables: jobs, procrastinate_jobs)" in done.stderr
    assert "python -m interpreter.worker --apply-schema" in done.stderr
