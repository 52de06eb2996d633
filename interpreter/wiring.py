"""The parts of a process on PostgreSQL: store, queue and (unless API-only) an in-process worker."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from interpreter.config import Settings
from interpreter.errors import StoreError
from interpreter.languages import LanguageRegistry
from interpreter.metrics import Metrics
from interpreter.postgres.procrastinate_app import make_app
from interpreter.postgres.queue import PostgresQueue
from interpreter.postgres.schema import ensure_schema, schema_ready
from interpreter.postgres.worker import WorkerNode
from interpreter.runner import JobRunner
from interpreter.store.base import JobStore
from interpreter.store.sql import SqlStore, postgres_engine
from interpreter.watch import FinalWatch
from interpreter.workspace import JobPaths


def postgres_store(settings: Settings) -> tuple[SqlStore, AsyncEngine]:
    """The store on INTERPRETER_DATABASE_URL (opening it sets the schema up, or checks it)."""
    engine = postgres_engine(
        settings.postgres_dsn, settings.database_pool_size, settings.database_timeout_s
    )

    async def setup() -> None:
        if settings.apply_schema:
            await ensure_schema(engine)
        elif missing := await schema_ready(engine):
            raise StoreError(
                f"the database has no schema ({missing}): run "
                "`python -m interpreter.worker --apply-schema` or set INTERPRETER_APPLY_SCHEMA=true"
            )

    return SqlStore.from_async_engine(engine, setup, plain_dsn=settings.postgres_dsn), engine


def postgres_parts(
    settings: Settings,
    registry: LanguageRegistry,
    paths: JobPaths,
    metrics: Metrics,
    watch: FinalWatch,
    store: JobStore | None = None,
) -> tuple[JobStore, PostgresQueue, JobRunner | None]:
    sql, engine = postgres_store(settings)
    app = make_app(settings.postgres_dsn, settings.database_pool_size, settings.database_timeout_s)
    runner = None
    worker = None
    if settings.inprocess_worker:
        runner = JobRunner.from_settings(settings, registry, paths)
        worker = WorkerNode(settings, app, store or sql, runner, metrics, watch)
    queue = PostgresQueue(settings, engine, store or sql, app, metrics, watch, worker)
    return store or sql, queue, runner
