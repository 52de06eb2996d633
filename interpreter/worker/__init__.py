"""A standalone worker process: ``python -m interpreter.worker`` (PostgreSQL only).

It runs jobs from the procrastinate queue with the same runner and sandbox as the embedded
server, writes their results to PostgreSQL, and stops gracefully on SIGTERM or SIGINT.
``--apply-schema`` sets the schema up and exits; ``--check`` exits 0 when the database answers
and holds the schema (a liveness probe).

A database outage, however long, does not stop a worker: it retries until the database answers
(its running jobs keep running). It exits non-zero, with one line on stderr, only when it cannot
start (no database at start: its supervisor starts it again) or when its job loop stopped
although no signal asked it to.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from interpreter.extras import require_server_extra

try:
    import psycopg
    from procrastinate.exceptions import ConnectorException
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from interpreter.config import Settings
    from interpreter.datadir import DataDirLock
    from interpreter.errors import ConfigurationError, StoreError
    from interpreter.logs import configure as configure_logging
    from interpreter.queues.procrastinate.schema import ensure_schema, schema_ready
    from interpreter.wiring import build_worker, postgres_store
except ModuleNotFoundError as exc:  # no `server` extra: say so in one line
    require_server_extra(exc, __name__)
    raise

__all__ = ["main"]

logger = logging.getLogger("interpreter.worker")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m interpreter.worker",
        description="Run jobs from the PostgreSQL queue (INTERPRETER_DATABASE_URL).",
    )
    parser.add_argument(
        "--concurrency", type=int, help="jobs run at once (INTERPRETER_WORKER_CONCURRENCY)"
    )
    parser.add_argument("--apply-schema", action="store_true", help="set the schema up and exit")
    parser.add_argument(
        "--check", action="store_true", help="exit 0 when the database and its schema are there"
    )
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"worker_concurrency": args.concurrency} if args.concurrency else {}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid configuration: {exc.errors()[0]['msg']}") from exc
    if settings.database_kind != "postgresql":
        raise ConfigurationError(
            "a worker needs the shared queue: set INTERPRETER_DATABASE_URL=postgresql://... "
            "(the embedded server runs its jobs itself)"
        )
    return settings


async def _check(settings: Settings, apply: bool) -> str | None:
    store, engine = postgres_store(settings)
    try:
        if apply:
            await ensure_schema(engine)
            return None
        return await schema_ready(engine)
    finally:
        await engine.dispose()


async def _run(settings: Settings) -> bool:
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    try:
        return await _serve(settings)
    finally:
        lock.release()


async def _serve(settings: Settings) -> bool:
    """Run jobs until SIGTERM or SIGINT (True), or until the job loop stops by itself (False)."""
    parts = build_worker(settings)
    store, app, node = parts.store, parts.app, parts.node
    parts.paths.ensure()
    parts.paths.remove_transient()  # a previous worker's output and scratch files: ours alone here
    await store.open()
    await parts.registry.probe_versions()
    await app.open_async()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parts.runner.warm_up()  # before the default packages' build says it is ready
    prebuild = None
    if parts.packages is not None:  # the default packages, off the start's path
        prebuild = asyncio.create_task(parts.packages.prebuild(), name="default-packages")
    try:
        await node.start()
        done = asyncio.create_task(node.wait())
        await asyncio.wait([done, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
        await node.stop(settings.shutdown_grace_s)
        return stop.is_set()
    finally:
        if prebuild is not None:
            prebuild.cancel()
        await app.close_async()
        await store.close()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        settings = _settings(args)
    except ConfigurationError as exc:
        print(f"interpreter.worker: refusing to start: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        if args.check or args.apply_schema:
            missing = asyncio.run(_check(settings, apply=args.apply_schema))
            if missing:
                print(f"interpreter.worker: not ready: {missing}", file=sys.stderr)
                return 1
            return 0
        if not asyncio.run(_run(settings)):
            print("interpreter.worker: the job loop stopped unexpectedly", file=sys.stderr)
            return 1
    except (ConfigurationError, StoreError) as exc:
        print(f"interpreter.worker: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, SQLAlchemyError, psycopg.Error, ConnectorException) as exc:
        cause = exc.__cause__ or exc
        print(f"interpreter.worker: cannot reach the database: {cause}", file=sys.stderr)
        return 1
    return 0
