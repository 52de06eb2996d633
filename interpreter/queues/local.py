"""The local queue (the embedded server's, in-process): FIFO, at most ``max_jobs`` running,
the rest pending, over a store that only this process writes.

It owns the running jobs' cancel events and counts pending jobs for the caps in memory; each job
runs through ``execution.Execution``, as on a PostgreSQL worker. A running job's cancel sets its
event and waits for the job's final record, which the runner's outcome decides: cancelled when it
killed the job, the job's own status when its process had already exited.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from interpreter.errors import QueueFull, StoreError, TooManyPendingJobs
from interpreter.job import InputFile, Job, JobStatus, utcnow
from interpreter.metrics import Metrics
from interpreter.queues.base import QueueState, cancel_wait_s
from interpreter.queues.pending import PendingJobs
from interpreter.running.base import Runner
from interpreter.running.lifecycle import (
    CANCEL_MESSAGE,
    RESTART_MESSAGE,
    SHUTDOWN_MESSAGE,
    STORE_RETRY_S,
    Execution,
    cancel_in_store,
)
from interpreter.store.base import JobStore
from interpreter.watch import JobWatch

logger = logging.getLogger(__name__)

# How long a cancel waits for a running job's final record, beyond the kill's grace and the scan
# of its files after it (then the job is cancelled in the store as it is).


@dataclass(frozen=True, slots=True)
class PendingCaps:
    """How many jobs may wait: per API key (with authentication) and in all."""

    per_owner: int = 1_000
    total: int = 10_000


class LocalQueue:
    def __init__(
        self,
        store: JobStore,
        runner: Runner,
        max_jobs: int,
        metrics: Metrics | None = None,
        watch: JobWatch | None = None,
        caps: PendingCaps | None = None,
    ) -> None:
        self.store = store
        self.watch = watch or JobWatch()
        self.runner = runner
        self.max_jobs = max_jobs
        self.metrics = metrics or Metrics()
        self.caps = caps or PendingCaps()
        self.recheck_s = 0.5  # every final status is written here, and announced: a safety net
        self.execution = Execution(store, runner, self.metrics, self.watch)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self.pending = PendingJobs()  # what the caps count; the queue may hold cancelled ids
        self._cancel: dict[str, asyncio.Event] = {}
        self._cancel_reason: dict[str, str] = {}
        self._cancelling: set[str] = set()  # running jobs a cancel asked to stop
        self._ended: dict[str, asyncio.Future[None]] = {}  # resolved once the job is recorded
        self._workers: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def cancel_wait_s(self) -> float:
        """How long a cancel waits for a running job's final record: the kill, then what the
        runner does after it (output, the file scan)."""
        limits = self.runner.limits
        return cancel_wait_s(limits.kill_grace_s, limits.scan.max_seconds)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover after a restart, then start the workers."""
        failed = await self.store.fail_running(RESTART_MESSAGE)
        for job_id in failed:
            logger.warning("job failed by restart", extra={"job_id": job_id, "status": "failed"})
            self.metrics.jobs_finished.labels(status="failed").inc()
        if failed:
            crashed = [job for job_id in failed if (job := await self.store.get(job_id))]
            await self.runner.recover_after_crash(self.store, crashed)
        after_seq = 0  # ids and owners only, a page at a time: never the pending jobs' code
        while page := await self.store.pending_ids(after_seq=after_seq):
            for entry in page:
                self.pending.add(entry.id, entry.owner)
                self._queue.put_nowait(entry.id)
            after_seq = page[-1].seq
        self._update_gauges()
        self._workers = [
            asyncio.create_task(self._work(), name=f"dispatcher-worker-{i}")
            for i in range(self.max_jobs)
        ]

    async def stop(self, grace_s: float) -> None:
        """Stop taking jobs; let running ones finish within ``grace_s``, then cancel them.

        Pending jobs stay pending in the store and run after the next start.
        """
        self._stopping = True
        for task in self._workers:
            if task not in self._busy:
                task.cancel()
        busy = set(self._busy)
        if busy:
            _, still = await asyncio.wait(busy, timeout=grace_s)
            if still:
                for job_id, event in list(self._cancel.items()):
                    self._cancel_reason[job_id] = SHUTDOWN_MESSAGE
                    event.set()
                _, still = await asyncio.wait(still, timeout=self.runner.limits.kill_grace_s + 10)
                for task in still:
                    task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        await asyncio.to_thread(self.runner.close)

    @property
    def accepting(self) -> bool:
        return not self._stopping

    @property
    def alive(self) -> bool:
        return bool(self._workers) and not any(t.done() for t in self._workers)

    @property
    def running_count(self) -> int:
        return len(self._cancel)

    @property
    def queue_depth(self) -> int:
        """Jobs waiting to start (a cancelled job no longer counts, though its id is queued)."""
        return len(self.pending)

    @property
    def mean_duration_s(self) -> float:
        return self.execution.mean_duration_s

    # -- submission and cancel -------------------------------------------------------------
    async def submit(self, job: Job, inputs: Sequence[InputFile] = ()) -> tuple[Job, datetime]:
        estimate = self.estimate_start()
        self._admit(job.id, job.owner)
        try:
            job = await self.store.create(job, inputs)
        except BaseException:
            self.pending.discard(job.id)
            raise
        if job.request.session_id is not None:
            # A session runs one execution at a time, in its own kernel: it takes no worker,
            # so that executions waiting for their session never hold back other jobs
            self._run_apart(job.id)
        else:
            self.enqueue(job.id)
        return job, estimate

    def _run_apart(self, job_id: str) -> None:
        async def run() -> None:
            try:
                await self._run_one(job_id)
            except Exception:  # a store outage: the job is failed at the next start
                logger.exception("cannot run a session's job", extra={"job_id": job_id})

        task = asyncio.create_task(run(), name=f"session-job-{job_id}")
        self._busy.add(task)
        task.add_done_callback(self._busy.discard)

    def _admit(self, job_id: str, owner: str | None) -> None:
        """Count the job as pending if the caps allow it (no await between check and count).

        The cap per owner applies with authentication; without it, only the global cap."""
        # A pending job leaves the queue about every mean run time / workers: a hint, not a promise
        retry_after_s = self.mean_duration_s / self.max_jobs
        if owner is not None and self.pending.count(owner) >= self.caps.per_owner:
            raise TooManyPendingJobs(
                f"too many pending jobs for this key ({self.caps.per_owner}); "
                "wait for some to start, or cancel some",
                retry_after_s=retry_after_s,
            )
        if len(self.pending) >= self.caps.total:
            raise QueueFull(
                f"too many pending jobs on this server ({self.caps.total}); retry later",
                retry_after_s=retry_after_s,
            )
        self.pending.add(job_id, owner)

    def enqueue(self, job_id: str) -> None:
        self._queue.put_nowait(job_id)
        self._update_gauges()

    def estimate_start(self) -> datetime:
        """When a job enqueued now is expected to start, from the queue and recent run times."""
        free = self.max_jobs - self.running_count
        ahead = self.queue_depth
        if ahead < free:
            return utcnow()
        waves = math.ceil((ahead - free + 1) / self.max_jobs)
        return utcnow() + timedelta(seconds=waves * self.mean_duration_s)

    async def cancel(self, job_id: str) -> Job | None:
        """A pending job: cancelled at once. A running one: stopped by its runner, its final
        record returned once written (see ``JobQueue.cancel``)."""
        cancelled = await cancel_in_store(
            self.store, self.watch, self.metrics, job_id, JobStatus.PENDING
        )
        if cancelled is not None:  # it never ran (a worker claiming it now finds it cancelled)
            self.pending.discard(job_id)
            return cancelled
        event, ended = self._cancel.get(job_id), self._ended.get(job_id)
        if event is None or ended is None:  # not running here: final, or left running by a
            # store outage when its run ended (nobody to ask)
            return await cancel_in_store(self.store, self.watch, self.metrics, job_id)
        first = job_id not in self._cancelling
        self._cancelling.add(job_id)
        self._cancel_reason.setdefault(job_id, CANCEL_MESSAGE)
        event.set()
        await asyncio.wait({ended}, timeout=self.cancel_wait_s)
        job = await self.store.get(job_id)
        if job is not None and not job.is_final:  # its run did not end in time
            logger.warning(
                "cancelled job still running: cancelled as it is", extra={"job_id": job_id}
            )
            return await cancel_in_store(self.store, self.watch, self.metrics, job_id)
        return job if first else None

    async def state(self) -> QueueState:
        depth = self.queue_depth
        if not self.alive:
            health, why = "unhealthy", "dispatcher workers are not running"
        elif depth >= self.caps.total:
            health, why = "degraded", f"queue is full ({depth} pending)"
        else:
            health, why = "healthy", None
        return QueueState("in-process", health, why, depth, self.running_count)

    # -- the workers -----------------------------------------------------------------------
    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping:
            job_id = await self._queue.get()
            if self._stopping:
                return
            self._busy.add(task)
            try:
                await self._run_one(job_id)
            except Exception:  # a store outage must not kill the worker
                logger.exception("dispatcher failed to run a job", extra={"job_id": job_id})
            finally:
                self._busy.discard(task)
                self._update_gauges()

    async def _run_one(self, job_id: str) -> None:
        if job_id in self._cancel:  # queued twice: it is being run already
            return
        event = asyncio.Event()
        ended = asyncio.get_running_loop().create_future()
        self._cancel[job_id] = event  # before the claim, so that a cancel always finds it
        self._ended[job_id] = ended
        try:
            try:
                job = await self.execution.claim(job_id)
            except StoreError:
                logger.exception("cannot mark the job running; retrying", extra={"job_id": job_id})
                self._requeue_later(job_id)
                return
            self.pending.discard(job_id)  # it left pending: running now, or cancelled before
            if job is None:
                return  # cancelled (or deleted) while pending
            self._update_gauges()
            await self.execution.run(job, event, lambda: self._cancel_reason.get(job_id))
        finally:
            self._cancel.pop(job_id, None)
            self._cancel_reason.pop(job_id, None)
            self._cancelling.discard(job_id)
            self._ended.pop(job_id, None)
            if not ended.done():
                ended.set_result(None)  # its final record is written (or will not be, here)

    def _requeue_later(self, job_id: str) -> None:
        """A store outage must not lose a pending job: try it again in a while."""
        asyncio.get_running_loop().call_later(STORE_RETRY_S[-1], self._queue.put_nowait, job_id)

    def _update_gauges(self) -> None:
        self.metrics.queue_depth.set(self.queue_depth)
        self.metrics.running_jobs.set(self.running_count)
