"""The one place that builds a process's parts from its settings: the store, the queue and the
runner, for the embedded server (SQLite, the in-process ``LocalQueue``) or the scale-out
(PostgreSQL, procrastinate; an API replica with or without an in-process worker, or a worker).
The database branch is here and nowhere else. Tests pass their own store, runner or queue.
The PostgreSQL modules (procrastinate, psycopg) are imported only when the settings ask for
them: the embedded server never loads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from interpreter.config import Settings
from interpreter.errors import StoreError
from interpreter.languages import LanguageRegistry
from interpreter.metrics import Metrics
from interpreter.packages import Packages
from interpreter.queues.base import JobQueue
from interpreter.queues.local import LocalQueue, PendingCaps
from interpreter.running.base import Runner
from interpreter.running.live import ChunkPublisher, WakeStreams
from interpreter.running.runner import JobRunner
from interpreter.store import CachedStore, SqlStore
from interpreter.store.base import JobStore
from interpreter.watch import JobWatch
from interpreter.workspace import JobPaths

if TYPE_CHECKING:
    import procrastinate
    from sqlalchemy.ext.asyncio import AsyncEngine

    from interpreter.queues.procrastinate.worker import WorkerNode
    from interpreter.sessions.host import SessionHost
    from interpreter.sessions.manager import Sessions
    from interpreter.sessions.remote import RemoteSessions


@dataclass(frozen=True)
class Parts:
    """What a server process is made of, beside its HTTP layer."""

    store: JobStore
    queue: JobQueue
    runner: Runner | None  # None: this process runs no job (an API-only replica)
    registry: LanguageRegistry
    paths: JobPaths
    metrics: Metrics
    watch: JobWatch
    outputs_in_store: bool  # scale-out: every replica reads outputs from the store
    packages: Packages | None  # None: no Python interpreter here to install packages for
    # What the API asks of sessions: held here (embedded), on workers (scale-out), or none
    sessions: Sessions | RemoteSessions | None = None


def build(
    settings: Settings,
    store: JobStore | None = None,
    runner: Runner | None = None,
    queue: JobQueue | None = None,
) -> Parts:
    """The parts of an API process. ``store``, ``runner`` and ``queue`` replace the ones the
    settings call for (tests inject a memory store, a fake runner, a fake queue)."""
    registry = LanguageRegistry.from_settings(settings)
    scale_out = settings.database_kind == "postgresql"
    packages = packages_for(
        settings,
        registry,
        runs_jobs=runner is None and (settings.inprocess_worker or not scale_out),
    )
    # an injected runner's outputs are where the service reads them
    paths = runner.paths if runner is not None else JobPaths(settings.data_dir, settings.workspaces)
    metrics = Metrics()
    watch = JobWatch()
    sessions: Sessions | RemoteSessions | None = None
    if scale_out:
        from interpreter.queues.procrastinate.queue import PostgresQueue
        from interpreter.queues.procrastinate.worker import WorkerNode

        sql, engine = postgres_store(settings)
        store = store or sql
        app = postgres_app(settings)
        worker = None
        if settings.sessions:
            from interpreter.sessions.remote import RemoteSessions

            sessions = RemoteSessions(settings, engine, app)
        if settings.inprocess_worker:
            runner = runner or JobRunner.from_settings(
                settings, registry, paths, live=ChunkPublisher(store), packages=packages
            )
            host = session_host(settings, runner, paths, packages, engine)
            worker = WorkerNode(settings, app, store, runner, metrics, watch, host)
        queue = queue or PostgresQueue(settings, engine, store, app, metrics, watch, worker)
    else:
        if store is None:  # embedded: this process is the database's only writer
            store = CachedStore(SqlStore.sqlite(settings.database_path))
        runner = runner or JobRunner.from_settings(
            settings, registry, paths, live=WakeStreams(watch), packages=packages
        )
        if settings.sessions and isinstance(runner, JobRunner):
            from interpreter.sessions.manager import Sessions

            sessions = Sessions(settings, runner.sandbox, paths, packages, runner.live)
            runner.sessions = sessions
        caps = PendingCaps(settings.max_pending_per_key, settings.max_pending_jobs)
        queue = queue or LocalQueue(store, runner, settings.max_jobs, metrics, watch, caps)
    if isinstance(runner, JobRunner):
        metrics.watch_warm_pool(runner.sandbox.warm_stats)
    return Parts(
        store,
        queue,
        runner,
        registry,
        paths,
        metrics,
        watch,
        scale_out,
        packages=packages,
        sessions=sessions,
    )


def session_host(
    settings: Settings,
    runner: Runner,
    paths: JobPaths,
    packages: Packages | None,
    engine: AsyncEngine,
) -> SessionHost | None:
    """The sessions a worker holds (scale-out), when sessions are on and it runs real jobs."""
    if not settings.sessions or not isinstance(runner, JobRunner):
        return None
    from interpreter.sessions.host import SessionHost
    from interpreter.sessions.manager import Sessions

    local = Sessions(settings, runner.sandbox, paths, packages, runner.live)
    runner.sessions = local
    return SessionHost(local, engine)


def packages_for(
    settings: Settings, registry: LanguageRegistry, runs_jobs: bool
) -> Packages | None:
    """Per-job packages for the Python interpreter, when this host has one."""
    python = registry.languages.get("python")
    if python is None or python.executable is None:
        return None
    return Packages.from_settings(settings, python.executable, runs_jobs)


def postgres_store(settings: Settings) -> tuple[SqlStore, AsyncEngine]:
    """The store on INTERPRETER_DATABASE_URL (opening it sets the schema up, or checks it)."""
    from interpreter.queues.procrastinate.schema import ensure_schema, schema_ready
    from interpreter.store.sql import postgres_engine

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


def postgres_app(settings: Settings) -> procrastinate.App:
    """procrastinate's app on INTERPRETER_DATABASE_URL, with the configured pool."""
    from interpreter.queues.procrastinate.app import make_app

    return make_app(settings.postgres_dsn, settings.database_pool_size, settings.database_timeout_s)


@dataclass(frozen=True)
class WorkerParts:
    store: SqlStore
    app: procrastinate.App
    runner: JobRunner
    node: WorkerNode
    registry: LanguageRegistry
    paths: JobPaths
    packages: Packages | None


def build_worker(settings: Settings) -> WorkerParts:
    """The parts of a standalone worker (``python -m interpreter.worker``)."""
    from interpreter.queues.procrastinate.worker import WorkerNode

    registry = LanguageRegistry.from_settings(settings)
    paths = JobPaths(settings.data_dir, settings.workspaces)
    store, engine = postgres_store(settings)
    app = postgres_app(settings)
    packages = packages_for(settings, registry, runs_jobs=True)
    runner = JobRunner.from_settings(
        settings, registry, paths, live=ChunkPublisher(store), packages=packages
    )
    host = session_host(settings, runner, paths, packages, engine)
    node = WorkerNode(settings, app, store, runner, Metrics(), JobWatch(), host)
    return WorkerParts(store, app, runner, node, registry, paths, packages)
