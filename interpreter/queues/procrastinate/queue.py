"""The PostgreSQL queue: what an API replica does with jobs (a worker may run in the same process).

A submission is one transaction: the pending-job caps checked under an advisory lock (so that
they hold across replicas), the procrastinate job deferred, our job row inserted with its input
files. Either all rows exist or none. A pending job's cancel is a compare-and-set on our row
(its entry dropped); a running job's is procrastinate's abort, which reaches the worker running
the job over LISTEN/NOTIFY: the worker writes the final record, which the cancel waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import procrastinate
import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from interpreter.config import Settings
from interpreter.errors import IdempotencyKeyTaken, QueueFull, StoreError, TooManyPendingJobs
from interpreter.job import InputFile, Job, JobStatus, utcnow
from interpreter.metrics import Metrics
from interpreter.queues.base import QueueState, cancel_wait_s, until_final
from interpreter.queues.procrastinate.app import QUEUE, queue_entry
from interpreter.queues.procrastinate.schema import FINAL_CHANNEL, OUTPUT_CHANNEL
from interpreter.queues.procrastinate.worker import WorkerNode
from interpreter.running.lifecycle import cancel_in_store
from interpreter.store.base import JobStore
from interpreter.store.plain_writes import POSTGRESQL
from interpreter.store.sql import describe_db_error, input_rows, insert_values, key_taken
from interpreter.watch import JobWatch

logger = logging.getLogger("interpreter.queue")

PENDING = JobStatus.PENDING.value
RUNNING = JobStatus.RUNNING.value
DB_ERRORS = (SQLAlchemyError, psycopg.Error, procrastinate.exceptions.ConnectorException)
CANCEL_TRIES = 3  # a pending job claimed between the read and the compare-and-set: read again
CANCEL_RECHECK_S = 0.5  # a cancel re-reads the job this often while it waits for the final record
ABORT_REQUESTED = "SELECT abort_requested FROM procrastinate_jobs WHERE id = %s FOR UPDATE"


class PostgresQueue:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        store: JobStore,
        app: procrastinate.App,
        metrics: Metrics,
        watch: JobWatch,
        worker: WorkerNode | None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.app = app
        self.metrics = metrics
        self.watch = watch
        self.worker = worker  # the in-process worker, unless INTERPRETER_INPROCESS_WORKER=false
        # Final statuses are announced by the database (NOTIFY): a long poll re-reads the store
        # only in case the listener was reconnecting; every re-read costs a query per waiter.
        self.recheck_s = 5.0
        self._stopping = False
        self._workers_alive = 0
        self._mean_duration_s = 1.0
        self._monitor: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.app.open_async()
        await self._refresh()
        self._monitor = asyncio.create_task(self._monitor_loop(), name="queue-monitor")
        self._listener = asyncio.create_task(self._listen_final(), name="final-listener")
        if self.worker is not None:
            await self.worker.start()

    async def stop(self, grace_s: float) -> None:
        self._stopping = True
        if self.worker is not None:
            await self.worker.stop(grace_s)
        for task in (self._monitor, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.app.close_async()

    @property
    def accepting(self) -> bool:
        return not self._stopping

    # -- submission and cancel --------------------------------------------------------------
    async def submit(self, job: Job, inputs: Sequence[InputFile] = ()) -> tuple[Job, datetime]:
        connector = self.app.connector
        assert isinstance(connector, procrastinate.PsycopgConnector)
        try:  # plain psycopg on procrastinate's pool: a third of SQLAlchemy's cost per statement
            async with connector.pool.connection() as conn, conn.transaction():
                pending = await self._admit(conn, job.owner)
                queue = QUEUE
                if job.request.session_id is not None:  # the worker that holds the session
                    held = await conn.execute(
                        "SELECT queue FROM sessions WHERE id = %s", (job.request.session_id,)
                    )
                    found = await held.fetchone()
                    queue = found[0] if found is not None and found[0] else QUEUE
                entry = await self.app.job_manager.defer_job_async(
                    queue_entry(job.id, queue), connection=conn
                )
                job = job.evolve(queue_id=entry.id)
                sql, params = POSTGRESQL.insert(insert_values(job), returning="seq")
                row = await (await conn.execute(sql, params)).fetchone()
                if inputs:  # kept in the database: whichever worker runs the job reads them
                    sql, rows = POSTGRESQL.insert_inputs(input_rows(job.id, inputs))
                    async with conn.cursor() as cursor:
                        await cursor.executemany(sql, rows)
        except DB_ERRORS as exc:  # a taken key: the transaction, its queue entry too, undone
            if key_taken(exc):
                raise IdempotencyKeyTaken() from exc
            raise StoreError(f"cannot queue the job: {describe_db_error(exc)}") from exc
        assert row is not None
        return job.evolve(seq=row[0]), self._estimate(pending)

    async def _admit(self, conn: psycopg.AsyncConnection[Any], owner: str | None) -> int:
        """Check the caps, the per-key one under a lock per key (the total is checked without
        one: it may be overshot by as many submissions as race each other; without
        authentication there is no per-key cap, and submissions never wait for each other).
        Returns the jobs pending before."""
        if owner is not None:
            key = f"interpreter:pending:{owner}"
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
        counts = await conn.execute(
            "SELECT count(*) FILTER (WHERE owner = %s), count(*) FROM jobs WHERE status = %s",
            (owner, PENDING),
        )
        row = await counts.fetchone()
        assert row is not None
        mine, total = row
        retry_after_s = self._mean_duration_s / max(1, self._capacity())
        per_owner = self.settings.max_pending_per_key
        if owner is not None and mine >= per_owner:
            raise TooManyPendingJobs(
                f"too many pending jobs for this key ({per_owner}); "
                "wait for some to start, or cancel some",
                retry_after_s=retry_after_s,
            )
        if total >= self.settings.max_pending_jobs:
            raise QueueFull(
                f"too many pending jobs ({self.settings.max_pending_jobs}); retry later",
                retry_after_s=retry_after_s,
            )
        return int(total)

    def _capacity(self) -> int:
        return self._workers_alive * self.settings.concurrency

    def _estimate(self, ahead: int) -> datetime:
        capacity = self._capacity()
        if capacity == 0:  # no worker seen: a guess from the mean run time
            return utcnow() + timedelta(seconds=self._mean_duration_s)
        waves = math.floor(ahead / capacity)
        return utcnow() + timedelta(seconds=waves * self._mean_duration_s)

    async def cancel(self, job_id: str) -> Job | None:
        """A pending job: cancelled at once, its queue entry dropped. A running one: its worker
        is asked to stop it (procrastinate's abort), and its final record, which the worker
        writes, is awaited (see ``JobQueue.cancel``)."""
        for _ in range(CANCEL_TRIES):
            job = await self.store.get(job_id)
            if job is None or job.is_final:
                return None
            if job.status == JobStatus.RUNNING:
                return await self._cancel_running(job)
            cancelled = await cancel_in_store(
                self.store, self.watch, self.metrics, job_id, JobStatus.PENDING
            )
            if cancelled is not None:
                await self._drop_entry(cancelled)
                return cancelled
            # claimed by a worker meanwhile: it runs now (read it again)
        return await self._cancel_in_store(job_id)

    async def _cancel_running(self, job: Job) -> Job | None:
        first = await self._abort(job)
        if first is not None:
            final = await self._wait_final(job.id, self._cancel_wait_s())
            if final is not None:
                return final if first else None
            logger.warning(
                "cancelled job still running: cancelled as it is", extra={"job_id": job.id}
            )
        # Its worker does not answer (gone, or the queue unreachable): cancelled in our row as it
        # is; a worker that comes back attaches what ran, the status kept.
        return await self._cancel_in_store(job.id)

    async def _abort(self, job: Job) -> bool | None:
        """Ask the worker running ``job`` to stop it: procrastinate's abort, which reaches it
        over LISTEN/NOTIFY. True for the first request of it, False for a later one; None when
        it has no live entry to abort (its worker finished it, or the queue is unreachable)."""
        if job.queue_id is None:
            return None
        connector = self.app.connector
        assert isinstance(connector, procrastinate.PsycopgConnector)
        try:  # the entry's row lock: of concurrent cancels (on any replica), one is the first
            async with connector.pool.connection() as conn, conn.transaction():
                found = await conn.execute(ABORT_REQUESTED, (job.queue_id,))
                row = await found.fetchone()
                if row is None:
                    return None
                aborted = await self.app.job_manager.cancel_job_by_id_async(
                    job.queue_id, abort=True, connection=conn
                )
        except DB_ERRORS:
            logger.exception("cannot abort the queue entry", extra={"job_id": job.id})
            return None
        return (not row[0]) if aborted else None

    async def _wait_final(self, job_id: str, timeout_s: float) -> Job | None:
        """The job once final (woken by the database's NOTIFY, re-read every
        ``CANCEL_RECHECK_S`` in case one was missed); None if it is not within ``timeout_s``."""
        job = await until_final(
            lambda: self.store.get(job_id), self.watch, job_id, timeout_s, CANCEL_RECHECK_S
        )
        return job if job is not None and job.is_final else None

    def _cancel_wait_s(self) -> float:
        return cancel_wait_s(self.settings.kill_grace_s, self.settings.file_scan_max_seconds)

    async def _cancel_in_store(self, job_id: str) -> Job | None:
        cancelled = await cancel_in_store(self.store, self.watch, self.metrics, job_id)
        if cancelled is not None:
            await self._drop_entry(cancelled)
        return cancelled

    async def _drop_entry(self, cancelled: Job) -> None:
        """Drop the queue entry of a job cancelled in our row (abort it, if a worker has it)."""
        if cancelled.queue_id is None:
            return
        try:
            await self.app.job_manager.cancel_job_by_id_async(
                cancelled.queue_id, abort=True, delete_job=True
            )
        except DB_ERRORS:
            # Our row says cancelled: a worker that picks the entry up skips it.
            logger.exception("cannot abort the queue entry", extra={"job_id": cancelled.id})

    # -- state ------------------------------------------------------------------------------
    async def _counts(self) -> tuple[int, int, int]:
        """Pending and running jobs, and workers whose heartbeat is recent."""
        query = sa.text(
            "SELECT"
            " (SELECT count(*) FROM jobs WHERE status = :pending),"
            " (SELECT count(*) FROM jobs WHERE status = :running),"
            " (SELECT count(*) FROM procrastinate_workers"
            "   WHERE last_heartbeat > now() - make_interval(secs => :window))"
        )
        params = {
            "pending": PENDING,
            "running": RUNNING,
            "window": self.settings.worker_lost_after_s,
        }
        async with self.engine.connect() as conn:
            pending, running, alive = (await conn.execute(query, params)).one()
        return int(pending), int(running), int(alive)

    async def state(self) -> QueueState:
        try:
            pending, running, alive = await self._counts()
        except DB_ERRORS as exc:
            unreachable = f"queue unreachable: {exc.__class__.__name__}"
            return QueueState("procrastinate", "unhealthy", unreachable, 0, 0, None)
        self._workers_alive = alive
        why: str | None
        if alive == 0:
            health, why = "degraded", "no worker seen recently: jobs wait until one starts"
        elif pending >= self.settings.max_pending_jobs:
            health, why = "degraded", f"queue is full ({pending} pending)"
        else:
            health, why = "healthy", None
        return QueueState("procrastinate", health, why, pending, running, alive)

    async def _refresh(self) -> None:
        _, _, self._workers_alive = await self._counts()
        query = sa.text(
            "SELECT avg(execution_time_ms) FROM (SELECT execution_time_ms FROM jobs"
            " WHERE status = 'completed' ORDER BY seq DESC LIMIT 50) recent"
        )
        async with self.engine.connect() as conn:
            mean_ms = (await conn.execute(query)).scalar()
        if mean_ms is not None:
            self._mean_duration_s = float(mean_ms) / 1000

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.worker_heartbeat_s)
            try:
                await self._refresh()
            except DB_ERRORS:
                logger.warning("queue monitor cannot reach the database")

    async def _listen_final(self) -> None:
        """Wake this replica's long polls when any process makes a job final, and its output
        streams when a job starts or publishes output (NOTIFY from the schema's triggers), on
        one connection; reconnects after a failure. Long polls and streams also re-read on
        their own."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.settings.postgres_dsn, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {FINAL_CHANNEL}")
                    await conn.execute(f"LISTEN {OUTPUT_CHANNEL}")
                    async for notice in conn.notifies():
                        if notice.channel == OUTPUT_CHANNEL:
                            self.watch.wake(notice.payload)
                        else:
                            self.watch.notify(notice.payload)
            except psycopg.Error:
                logger.warning("lost the final-status listener; reconnecting")
                await asyncio.sleep(1.0)
