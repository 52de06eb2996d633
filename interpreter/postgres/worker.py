"""A worker: runs jobs from the procrastinate queue with the same execution as the embedded mode.

- Claim: pending -> running is a compare-and-set naming this worker, so a redelivered job that
  is already final (or cancelled while queued) never runs twice.
- Cancel: procrastinate's abort (LISTEN/NOTIFY) cancels the job's asyncio task; the task turns
  that into the runner's cancel event, which kills the job's process tree.
- Worker loss: every worker also watches the others. A worker whose heartbeat is older than
  ``INTERPRETER_WORKER_LOST_AFTER`` is lost; each of its jobs is re-queued (up to
  ``INTERPRETER_WORKER_LOST_RERUNS`` times) or failed with "worker lost". Compare-and-set on the
  worker id and attempt count decides the race between several watchers.
- Lost queue entries: the same check gives a new entry to a pending job older than that window
  whose entry is gone.
- Outputs go into the store (every replica serves them); the job's files stay on this machine,
  which the result names (worker id and host); files of jobs deleted by retention are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence

import procrastinate
import psycopg
from procrastinate import worker as procrastinate_worker
from procrastinate.job_context import AbortReason, JobContext

from interpreter.config import Settings
from interpreter.dispatcher import SHUTDOWN_MESSAGE
from interpreter.errors import StoreError
from interpreter.execution import Execution
from interpreter.job import Job, JobStatus, utcnow
from interpreter.metrics import Metrics
from interpreter.postgres.procrastinate_app import QUEUE, TASK, queue_entry
from interpreter.runner import JobRunner
from interpreter.store.base import JobStore
from interpreter.watch import FinalWatch

logger = logging.getLogger("interpreter.worker")

LOST_MESSAGE = "worker lost: the worker running this job stopped answering"

ORPHANS = """
SELECT j.id, j.queue_id FROM jobs j
 WHERE j.status = 'pending'
   AND j.created_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => %(seconds)s)
   AND NOT EXISTS (
       SELECT 1 FROM procrastinate_jobs p
        WHERE p.id = j.queue_id AND p.status IN ('todo', 'doing'))
 ORDER BY j.seq LIMIT 100
"""
REQUEUE = (
    "UPDATE jobs SET queue_id = %(new)s WHERE id = %(id)s AND status = 'pending'"
    " AND queue_id IS NOT DISTINCT FROM %(old)s"
)


class WorkerNode:
    def __init__(
        self,
        settings: Settings,
        app: procrastinate.App,
        store: JobStore,
        runner: JobRunner,
        metrics: Metrics,
        watch: FinalWatch,
    ) -> None:
        self.settings = settings
        self.app = app
        self.store = store
        self.runner = runner
        self.execution = Execution(store, runner, metrics, watch, outputs_in_store=True)
        self.host = socket.gethostname()
        self.name = settings.worker_name or f"{self.host}:{os.getpid()}"
        app.task(name=TASK, pass_context=True)(self._run_job)
        self._worker = procrastinate_worker.Worker(
            app=app,
            queues=[QUEUE],
            name=self.name,
            concurrency=settings.concurrency,
            shutdown_graceful_timeout=settings.shutdown_grace_s,
            install_signal_handlers=False,
            update_heartbeat_interval=settings.worker_heartbeat_s,
            stalled_worker_timeout=settings.worker_lost_after_s,
            delete_jobs="always",
            listen_notify=True,
            fetch_job_polling_interval=settings.worker_heartbeat_s,
            abort_job_polling_interval=settings.worker_heartbeat_s,
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        run = self._worker.run()  # type: ignore[no-untyped-call]
        self._tasks = [
            asyncio.create_task(run, name="procrastinate-worker"),
            asyncio.create_task(self._watch_for_lost_workers(), name="worker-loss-check"),
            asyncio.create_task(self._sweep_loop(), name="worker-file-sweep"),
        ]
        logger.info(
            "worker started",
            extra={"worker": self.name, "concurrency": self.settings.concurrency},
        )

    async def stop(self, grace_s: float) -> None:
        """Take no new job; running ones get ``grace_s`` (procrastinate's graceful timeout),
        then are cancelled and recorded as such."""
        self._worker.stop()  # type: ignore[no-untyped-call]
        run, *side = self._tasks
        for task in side:
            task.cancel()
        limit = grace_s + self.runner.limits.kill_grace_s + 10
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.gather(*side, return_exceptions=True), 5)
            await asyncio.wait_for(run, limit)
        await asyncio.to_thread(self.runner.close)
        logger.info("worker stopped", extra={"worker": self.name})

    async def wait(self) -> None:
        """Until the procrastinate worker stops (or fails)."""
        await self._tasks[0]

    # -- one job ----------------------------------------------------------------------------
    async def _run_job(self, context: JobContext, job_id: str) -> None:
        cancel = asyncio.Event()
        reason: list[str] = []
        body = asyncio.create_task(self._claim_and_run(context, job_id, cancel, reason))
        try:
            await asyncio.shield(body)
        except asyncio.CancelledError:  # procrastinate aborts: by a user, or at shutdown
            if context.abort_reason() == AbortReason.SHUTDOWN:
                reason.append(SHUTDOWN_MESSAGE)
            cancel.set()
            await body  # the tree is killed; what it did is recorded
            raise

    async def _claim_and_run(
        self, context: JobContext, job_id: str, cancel: asyncio.Event, reason: list[str]
    ) -> None:
        entry = context.job
        job = await self.execution.with_retries(
            job_id,
            lambda: self.execution.claim(
                job_id,
                worker_id=str(entry.worker_id),
                worker_host=self.host,
                attempts=entry.attempts + 1,
            ),
        )
        if job is None:
            logger.info("job not pending any more: skipped", extra={"job_id": job_id})
            return
        await self.execution.run(job, cancel, lambda: reason[0] if reason else None)

    # -- other workers' loss ----------------------------------------------------------------
    async def _watch_for_lost_workers(self) -> None:
        while True:
            await asyncio.sleep(self.settings.worker_heartbeat_s)
            try:
                await self.recover_lost_jobs()
            except Exception:
                logger.exception("worker-loss check failed")

    async def recover_lost_jobs(self) -> int:
        """Re-queue or fail the jobs of workers whose heartbeat stopped, and queue again the
        pending jobs whose queue entry is gone; returns how many jobs were handled."""
        return await self._recover_stalled() + await self.requeue_orphans()

    async def requeue_orphans(self) -> int:
        """Pending jobs older than the lost-worker window with no live queue entry (one taken by
        a worker that failed to claim it while the database was unreachable) get a new one:
        a job whose id was returned is never left waiting for nothing. One transaction per job,
        conditioned on the entry it had, so that racing workers queue it once."""
        connector = self.app.connector
        assert isinstance(connector, procrastinate.PsycopgConnector)
        window_s = self.settings.worker_lost_after_s
        rows = await connector.execute_query_all_async(ORPHANS, seconds=window_s)
        handled = 0
        for row in rows:
            async with connector.pool.connection() as conn, conn.transaction():
                entry = await self.app.job_manager.defer_job_async(
                    queue_entry(row["id"]), connection=conn
                )
                moved = await conn.execute(
                    REQUEUE, {"id": row["id"], "old": row["queue_id"], "new": entry.id}
                )
                if moved.rowcount != 1:  # another worker did it first: drop our entry
                    raise psycopg.Rollback()
                handled += 1
                logger.warning("pending job queued again", extra={"job_id": row["id"]})
        return handled

    async def _recover_stalled(self) -> int:
        manager = self.app.job_manager
        stalled = await manager.get_stalled_jobs(
            task_name=TASK, seconds_since_heartbeat=self.settings.worker_lost_after_s
        )
        handled = 0
        for entry in stalled:
            try:
                handled += await self._recover(entry)
            except Exception:
                logger.exception("cannot recover a lost job", extra={"queue_id": entry.id})
        return handled

    async def _recover(self, entry: procrastinate.jobs.Job) -> int:
        manager = self.app.job_manager
        assert entry.id is not None
        job_id = str(entry.task_kwargs.get("job_id"))
        job = await self.store.get(job_id)
        if job is None or job.is_final:  # deleted, or it ended before its worker went away
            await manager.finish_job_by_id_async(
                entry.id, status=procrastinate.jobs.Status.ABORTED, delete_job=True
            )
            return 0
        if job.status == JobStatus.PENDING:  # lost between the queue's fetch and our claim
            await manager.retry_job(entry)
            return 1
        expect = {"worker_id": job.worker_id, "attempts": job.attempts}
        if job.attempts <= self.settings.worker_lost_reruns:
            moved = await self.store.compare_and_set(
                job.id,
                JobStatus.PENDING,
                expect=expect,
                worker_id=None,
                worker_host=None,
                started_at=None,
            )
            if moved:
                await manager.retry_job(entry)
                self._log_lost(job, "re-queued")
        else:
            moved = await self.store.compare_and_set(
                job.id,
                JobStatus.FAILED,
                expect=expect,
                completed_at=utcnow(),
                error_message=LOST_MESSAGE,
            )
            if moved:
                await manager.finish_job_by_id_async(
                    entry.id, status=procrastinate.jobs.Status.FAILED, delete_job=True
                )
                self.execution.metrics.jobs_finished.labels(status="failed").inc()
                self._log_lost(job, "failed")
        return int(moved)

    def _log_lost(self, job: Job, outcome: str) -> None:
        logger.warning(
            "job of a lost worker %s",
            outcome,
            extra={"job_id": job.id, "lost_worker": job.worker_id, "attempts": job.attempts},
        )

    # -- files of deleted jobs --------------------------------------------------------------
    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cleanup_interval_s)
            try:
                await self.sweep_local_files()
            except Exception:
                logger.exception("file sweep failed")

    async def sweep_local_files(self) -> int:
        """Remove this machine's workspaces of jobs that retention deleted from the store. Only
        directories untouched for the retention period can be such (a job is deleted that long
        after it ended), so only they cost a store lookup, not every workspace every sweep."""
        root = self.runner.paths.workspace_root
        cutoff = time.time() - self.settings.job_ttl_s
        names = await asyncio.to_thread(_job_directories, root, cutoff)
        gone = []
        for name in names:
            try:
                if await self.store.get(name) is None:
                    gone.append(name)
            except StoreError:
                return 0
        removed = 0
        for name in gone:
            try:
                await asyncio.to_thread(self.runner.paths.remove_workspace, name)
                removed += 1
            except OSError as exc:  # the next sweep tries again
                logger.warning("workspace of a deleted job not removed: %s", exc)
        return removed


def _job_directories(root: os.PathLike[str], modified_before: float) -> Sequence[str]:
    """Names of the fresh workspaces we created (UUIDs; a caller's own directories never are)
    last modified before ``modified_before``."""
    try:
        entries = os.scandir(root)
    except FileNotFoundError:
        return []
    found = []
    with entries:
        for entry in entries:
            try:
                if (
                    entry.is_dir(follow_symlinks=False)
                    and _is_uuid(entry.name)
                    and entry.stat(follow_symlinks=False).st_mtime < modified_before
                ):
                    found.append(entry.name)
            except OSError:
                continue  # removed meanwhile
    return found


def _is_uuid(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False
