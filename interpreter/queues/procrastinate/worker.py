"""A worker: runs jobs from the procrastinate queue with the same execution as the embedded mode.

- Claim: pending -> running is a compare-and-set naming this worker, so a redelivered job that
  is already final (or cancelled while queued) never runs twice.
- Cancel: procrastinate's abort (LISTEN/NOTIFY) cancels the job's asyncio task; the task turns
  that into the runner's cancel event, which kills the job's process tree.
- Worker loss: every worker also watches the others. A worker whose heartbeat is older than
  ``INTERPRETER_WORKER_LOST_AFTER`` is lost; each of its jobs is re-queued (up to
  ``INTERPRETER_WORKER_LOST_RERUNS`` times) or failed with "worker lost". Compare-and-set on the
  worker id and attempt count decides the race between several watchers. A watcher judges only
  once it has itself reached the database without a break for that long: after an outage,
  every live worker has sent a heartbeat again before anyone counts heartbeat ages, so an outage
  of any length re-runs nothing that was alive.
- Stale attempts: a worker that resumes after its jobs were re-queued (a long pause) finds out
  within a heartbeat: it kills those attempts' processes, writes nothing for them (fencing
  refuses it anyway) and leaves their queue entries, now another attempt's, alone.
- Outages: the procrastinate loop (``steady.SteadyWorker``) and every write of a job's end retry
  until the database answers; running jobs keep running meanwhile.
- Lost queue entries: the same check gives a new entry to a pending job older than that window
  whose entry is gone.
- Outputs go into the store (every replica serves them); the job's files stay on this machine,
  which the result names (worker id and host); files of jobs deleted by retention are removed.

Why one module of ~470 lines: claiming, loss detection, stale attempts and orphan recovery are
one protocol over the same rows and fencing tokens; apart, their races would be harder to see.
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import procrastinate
import psycopg
from procrastinate.job_context import AbortReason, JobContext

from interpreter.config import Settings
from interpreter.errors import StoreError
from interpreter.job import Job, JobStatus, utcnow
from interpreter.jobfiles import CaptureLimits
from interpreter.metrics import Metrics
from interpreter.queues.procrastinate.app import QUEUE, SESSION_TASK, TASK, queue_entry
from interpreter.queues.procrastinate.steady import SteadyWorker
from interpreter.running.base import Runner
from interpreter.running.lifecycle import SHUTDOWN_MESSAGE, Execution
from interpreter.store.base import JobStore, fencing_token
from interpreter.watch import JobWatch

if TYPE_CHECKING:
    from interpreter.sessions.host import SessionHost

logger = logging.getLogger("interpreter.worker")

LOST_MESSAGE = "worker lost: the worker running this job stopped answering"

# Jobs that no queue entry stands for: pending ones whose entry is gone (taken by a worker that
# could not claim them in an outage), running ones whose entry is not being run (the database
# lost writes: a failover to a replica that was behind).
ORPHANS = """
SELECT j.id, j.queue_id, j.status, j.attempts, j.worker_id FROM jobs j
 WHERE j.status = 'pending'
   AND j.created_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => %(seconds)s)
   AND NOT EXISTS (
       SELECT 1 FROM procrastinate_jobs p
        WHERE p.id = j.queue_id AND p.status IN ('todo', 'doing'))
 UNION ALL
SELECT j.id, j.queue_id, j.status, j.attempts, j.worker_id FROM jobs j
 WHERE j.status = 'running'
   AND j.started_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => %(seconds)s)
   AND NOT EXISTS (
       SELECT 1 FROM procrastinate_jobs p WHERE p.id = j.queue_id AND p.status = 'doing')
 LIMIT 100
"""
REQUEUE = (
    "UPDATE jobs SET queue_id = %(new)s, status = 'pending', worker_id = NULL,"
    " worker_host = NULL, started_at = NULL"
    " WHERE id = %(id)s AND status = %(status)s AND queue_id IS NOT DISTINCT FROM %(old)s"
    " AND attempts = %(attempts)s AND worker_id IS NOT DISTINCT FROM %(worker_id)s"
)
# A claim numbers its attempt from the queue entry's count: a new entry starts where the job is.
ENTRY_ATTEMPTS = "UPDATE procrastinate_jobs SET attempts = %(attempts)s WHERE id = %(new)s"
OWNERS = "SELECT id, status, attempts, worker_id, error_message FROM jobs WHERE id = ANY(%(ids)s)"
STALE_MESSAGE = "stale attempt: the job was queued again and runs elsewhere"
# procrastinate prunes workers at start by heartbeat age alone, which an outage fakes; the
# loss check below prunes instead, under its own rule. This only clears very old rows.
PRUNE_AT_START_S = 7 * 24 * 3600.0


@dataclass(eq=False)
class Attempt:
    """One job this worker runs: the job as claimed (its fencing token), its queue entry, and
    how to stop it."""

    job: Job
    entry_id: int
    cancel: asyncio.Event
    reason: list[str]
    started: float = field(default_factory=time.monotonic)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Reachability:
    """Whether this process has reached the database without a break for ``window_s``: only
    then may it judge other workers by their heartbeat's age (which an outage, or this
    process's own pause, makes look old)."""

    def __init__(self, window_s: float, max_gap_s: float) -> None:
        self.window_s = window_s
        self.max_gap_s = max_gap_s
        self._since: float | None = None
        self._last: float | None = None

    def reached(self, now: float) -> None:
        if self._since is None or self._last is None or now - self._last > self.max_gap_s:
            self._since = now  # first contact, or after an outage or a pause of our own
        self._last = now

    def failed(self) -> None:
        self._since = self._last = None

    def steady(self, now: float) -> bool:
        return self._since is not None and now - self._since >= self.window_s


class WorkerNode:
    def __init__(
        self,
        settings: Settings,
        app: procrastinate.App,
        store: JobStore,
        runner: Runner,
        metrics: Metrics,
        watch: JobWatch,
        sessions: SessionHost | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions  # the sessions this worker holds, on a queue of its own
        self.app = app
        self.store = store
        self.runner = runner
        capture = CaptureLimits(
            max_bytes=settings.max_captured_bytes,
            max_files=settings.max_captured_files,
            max_entries=settings.file_scan_max_entries,
            max_seconds=settings.file_scan_max_seconds,
        )
        self.execution = Execution(
            store, runner, metrics, watch, outputs_in_store=True, capture=capture
        )
        self.execution.retry_until_stored = True  # an outage of any length loses no result
        self.host = socket.gethostname()
        self.name = settings.worker_name or f"{self.host}:{os.getpid()}"
        app.task(name=TASK, pass_context=True)(self._run_job)
        queues = [QUEUE]
        if sessions is not None:
            app.task(name=SESSION_TASK)(sessions.handle)
            queues.append(sessions.queue)
        self._worker = SteadyWorker(
            app=app,
            queues=queues,
            name=self.name,
            concurrency=settings.concurrency,
            shutdown_graceful_timeout=settings.shutdown_grace_s,
            install_signal_handlers=False,
            update_heartbeat_interval=settings.worker_heartbeat_s,
            stalled_worker_timeout=PRUNE_AT_START_S,
            delete_jobs="always",
            listen_notify=True,
            fetch_job_polling_interval=settings.worker_heartbeat_s,
            abort_job_polling_interval=settings.worker_heartbeat_s,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._attempts: dict[str, Attempt] = {}
        heartbeat = settings.worker_heartbeat_s
        self.reachability = Reachability(settings.worker_lost_after_s, 3 * heartbeat + 1)

    async def start(self) -> None:
        if self.sessions is not None:
            self.sessions.start()
        run = self._worker.run()  # type: ignore[no-untyped-call]
        self._tasks = [
            asyncio.create_task(run, name="procrastinate-worker"),
            asyncio.create_task(self._watch_for_lost_workers(), name="worker-loss-check"),
            asyncio.create_task(self._watch_own_attempts(), name="stale-attempt-check"),
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
        if self.sessions is not None:  # their executions end with their kernels
            await self.sessions.close()
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
        assert entry.id is not None
        earlier = self._attempts.get(job_id)
        if earlier is not None:  # our own earlier attempt still runs it: stale, it goes first
            self._stop_stale(earlier)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(earlier.done.wait(), self.runner.limits.kill_grace_s + 10)
        attempt = Attempt(job, entry.id, cancel, reason)
        self._attempts[job_id] = attempt
        try:
            await self.execution.run(job, cancel, lambda: reason[0] if reason else None)
            # Only an attempt whose worker went silent that long can have lost its job meanwhile
            if time.monotonic() - attempt.started > self.settings.worker_lost_after_s / 2:
                await self._check_attempts([attempt])
        finally:
            attempt.done.set()
            if self._attempts.get(job_id) is attempt:
                del self._attempts[job_id]

    # -- our own stale attempts -------------------------------------------------------------
    async def _watch_own_attempts(self) -> None:
        while True:
            await asyncio.sleep(self.settings.worker_heartbeat_s)
            if not self._attempts:
                continue
            try:
                await self._check_attempts(list(self._attempts.values()))
            except Exception as exc:  # an outage: our attempts keep running meanwhile
                logger.debug("stale-attempt check failed: %s", type(exc).__name__)

    async def _check_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Stop the attempts that no longer own their job (re-queued, claimed by another
        attempt, failed as lost, deleted): kill the process, keep their queue entries, which
        another attempt now holds, untouched. An attempt still owns a job that is running, or
        final by its own hand (it has just recorded its end and is about to leave); one whose
        job the API cancelled in the store is stopped as cancelled and keeps its entry."""
        connector = self.app.connector
        assert isinstance(connector, procrastinate.PsycopgConnector)
        rows = await connector.execute_query_all_async(
            OWNERS, ids=[attempt.job.id for attempt in attempts]
        )
        owners = {row["id"]: row for row in rows}
        for attempt in attempts:
            row = owners.get(attempt.job.id)
            mine = fencing_token(attempt.job)
            if row is None or {"attempts": row["attempts"], "worker_id": row["worker_id"]} != mine:
                self._stop_stale(attempt)
            elif row["status"] == JobStatus.CANCELLED.value:
                attempt.cancel.set()
            elif row["status"] != JobStatus.RUNNING.value and row["error_message"] == LOST_MESSAGE:
                self._stop_stale(attempt)

    def _stop_stale(self, attempt: Attempt) -> None:
        if attempt.cancel.is_set() and attempt.entry_id in self._worker.stale_entries:
            return
        self._worker.stale_entries.add(attempt.entry_id)
        attempt.reason.insert(0, STALE_MESSAGE)
        attempt.cancel.set()
        logger.warning(
            "stale attempt stopped: its job was queued again",
            extra={"job_id": attempt.job.id, "attempts": attempt.job.attempts},
        )

    # -- other workers' loss ----------------------------------------------------------------
    async def _watch_for_lost_workers(self) -> None:
        connector = self.app.connector
        assert isinstance(connector, procrastinate.PsycopgConnector)
        while True:
            await asyncio.sleep(self.settings.worker_heartbeat_s)
            try:
                await connector.execute_query_async("SELECT 1")
            except Exception:
                self.reachability.failed()
                continue
            self.reachability.reached(time.monotonic())
            if not self.reachability.steady(time.monotonic()):
                continue  # after an outage (or our own pause), live workers are not late yet
            try:
                await self.recover_lost_jobs()
            except Exception:
                logger.exception("worker-loss check failed")

    async def recover_lost_jobs(self) -> int:
        """Re-queue or fail the jobs of workers whose heartbeat stopped, and queue again the
        pending jobs whose queue entry is gone; returns how many jobs were handled."""
        return await self._recover_stalled() + await self.requeue_orphans()

    async def requeue_orphans(self) -> int:
        """Jobs that no queue entry stands for (``ORPHANS``) for longer than the lost-worker
        window get a new one: a job whose id was returned is never left waiting for nothing,
        nor ``running`` for ever. One transaction per job, conditioned on the entry and the
        attempt it had, so that racing workers queue it once; a running one past its re-runs
        fails as lost, and the attempt that may still run it stops as stale."""
        connector = self.app.connector
        assert isinstance(connector, procrastinate.PsycopgConnector)
        window_s = self.settings.worker_lost_after_s
        rows = await connector.execute_query_all_async(ORPHANS, seconds=window_s)
        handled = 0
        for row in rows:
            if row["status"] == JobStatus.RUNNING.value:
                if row["attempts"] > self.settings.worker_lost_reruns:
                    handled += await self._fail_lost(
                        row["id"], {"worker_id": row["worker_id"], "attempts": row["attempts"]}
                    )
                    continue
            async with connector.pool.connection() as conn, conn.transaction():
                entry = await self.app.job_manager.defer_job_async(
                    queue_entry(row["id"]), connection=conn
                )
                moved = await conn.execute(
                    REQUEUE, {**row, "old": row["queue_id"], "new": entry.id}
                )
                if moved.rowcount != 1:  # another worker did it first: drop our entry
                    raise psycopg.Rollback()
                await conn.execute(ENTRY_ATTEMPTS, {"attempts": row["attempts"], "new": entry.id})
                handled += 1
                logger.warning(
                    "%s job without a queue entry queued again",
                    row["status"],
                    extra={"job_id": row["id"]},
                )
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
        # Their rows go: a lost worker that resumes finds its row gone and registers again.
        await manager.prune_stalled_workers(self.settings.worker_lost_after_s)
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
            moved = bool(await self._fail_lost(job.id, expect))
            if moved:
                await manager.finish_job_by_id_async(
                    entry.id, status=procrastinate.jobs.Status.FAILED, delete_job=True
                )
        return int(moved)

    async def _fail_lost(self, job_id: str, expect: dict[str, Any]) -> int:
        """Fail a job whose attempt ``expect`` was lost and may not run again."""
        moved = await self.store.compare_and_set(
            job_id,
            JobStatus.FAILED,
            expect=expect,
            completed_at=utcnow(),
            error_message=LOST_MESSAGE,
        )
        if moved:
            self.execution.metrics.jobs_finished.labels(status="failed").inc()
            logger.warning("job of a lost attempt failed", extra={"job_id": job_id, **expect})
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
