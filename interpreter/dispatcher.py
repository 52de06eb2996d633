"""The in-process dispatcher: FIFO, at most ``max_jobs`` running, the rest pending.

It owns the running jobs' cancel events. Every status change goes through the store's
compare-and-set, so a job cancelled by the API stays cancelled whatever the worker finds later.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from interpreter.errors import StoreError
from interpreter.job import Job, JobStatus, utcnow
from interpreter.metrics import Metrics
from interpreter.pending import PendingJobs
from interpreter.runner import Finish, JobRunner
from interpreter.store.base import JobStore
from interpreter.watch import FinalWatch

logger = logging.getLogger(__name__)

RESTART_MESSAGE = "server restarted during execution"
SHUTDOWN_MESSAGE = "cancelled: the server shut down during execution"
STORE_RETRY_S = (0.1, 0.5, 1.0, 2.0)


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        max_jobs: int,
        metrics: Metrics | None = None,
        watch: FinalWatch | None = None,
    ) -> None:
        self.store = store
        self.watch = watch or FinalWatch()
        self.runner = runner
        self.max_jobs = max_jobs
        self.metrics = metrics or Metrics()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self.pending = PendingJobs()  # what the caps count; the queue may hold cancelled ids
        self._cancel: dict[str, asyncio.Event] = {}
        self._cancel_reason: dict[str, str] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()
        self._durations_s: deque[float] = deque(maxlen=50)
        self._stopping = False
        self.processed = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover after a restart, then start the workers."""
        failed = await self.store.fail_running(RESTART_MESSAGE)
        for job_id in failed:
            logger.warning("job failed by restart", extra={"job_id": job_id, "status": "failed"})
            self.metrics.jobs_finished.labels(status="failed").inc()
        if failed:
            crashed = [job for job_id in failed if (job := await self.store.get(job_id))]
            await asyncio.to_thread(self.runner.clean_up_after_crash, crashed)
        for job in await self.store.pending():
            self.pending.add(job.id, job.owner)
            self._queue.put_nowait(job.id)
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
        """Mean run time of recent jobs (1 s before any has run)."""
        return sum(self._durations_s) / len(self._durations_s) if self._durations_s else 1.0

    # -- submission and cancel -------------------------------------------------------------
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

    def cancel_running(self, job_id: str) -> bool:
        """Kill the job's process tree if it runs here; the caller already moved it to cancelled."""
        event = self._cancel.get(job_id)
        if event is None:
            return False
        event.set()
        return True

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
        event = asyncio.Event()
        self._cancel[job_id] = event  # before the transition, so that a cancel always finds it
        try:
            # Compare-and-set before the process starts: a cancelled job never runs, and the
            # store says "running" for as long as the code runs.
            try:
                job = await self.store.transition(job_id, JobStatus.RUNNING, started_at=utcnow())
            except StoreError:
                logger.exception("cannot mark the job running; retrying", extra={"job_id": job_id})
                self._requeue_later(job_id)
                return
            self.pending.discard(job_id)  # it left pending: running now, or cancelled before
            if job is None:
                return  # cancelled (or deleted) while pending
            self._log_transition(job, JobStatus.RUNNING)
            self._update_gauges()
            finish = await self._guarded_run(job, event)
        finally:
            self._cancel.pop(job_id, None)
            reason = self._cancel_reason.pop(job_id, None)
        await self._finish(job, finish, reason)

    def _requeue_later(self, job_id: str) -> None:
        """A store outage must not lose a pending job: try it again in a while."""
        asyncio.get_running_loop().call_later(STORE_RETRY_S[-1], self._queue.put_nowait, job_id)

    async def _guarded_run(self, job: Job, event: asyncio.Event) -> Finish:
        try:
            return await self.runner.run(job, event)
        except Exception as exc:  # our fault, not the job's: say so and free the slot
            logger.exception("runner failed", extra={"job_id": job.id})
            return Finish(JobStatus.FAILED, None, f"internal error: {exc!r}", None)

    async def _finish(self, job: Job, finish: Finish, reason: str | None) -> None:
        error = (
            reason if (finish.status == JobStatus.CANCELLED and reason) else finish.error_message
        )
        done = await self._with_retries(
            job.id,
            lambda: self.store.transition(
                job.id,
                finish.status,
                completed_at=utcnow(),
                execution_time_ms=finish.execution_time_ms,
                error_message=error,
                result=finish.result,
            ),
        )
        if done is None:  # cancelled by the API meanwhile: keep its status, attach what ran
            if finish.result is not None:
                await self.store.attach_result(job.id, finish.result, finish.execution_time_ms)
            return
        self.watch.notify(job.id)
        self.processed += 1
        if finish.execution_time_ms is not None:
            seconds = finish.execution_time_ms / 1000
            self._durations_s.append(seconds)
            self.metrics.job_duration.labels(language=job.request.language).observe(seconds)
        self.metrics.jobs_finished.labels(status=done.status.value).inc()
        self._log_transition(done, done.status)

    async def _with_retries(
        self, job_id: str, write: Callable[[], Awaitable[Job | None]]
    ) -> Job | None:
        """A finished job must reach its final status: retry the store through short outages.
        If the store stays down, the job is failed by the next start ("server restarted")."""
        for delay_s in (*STORE_RETRY_S, None):
            try:
                return await write()
            except StoreError:
                if delay_s is None:
                    raise
                logger.warning("store write failed; retrying", extra={"job_id": job_id})
                await asyncio.sleep(delay_s)
        return None  # unreachable

    def _log_transition(self, job: Job, status: JobStatus) -> None:
        logger.info(
            "job %s",
            status.value,
            extra={
                "job_id": job.id,
                "status": status.value,
                "language": job.request.language,
                "duration_ms": job.execution_time_ms,
            },
        )

    def _update_gauges(self) -> None:
        self.metrics.queue_depth.set(self.queue_depth)
        self.metrics.running_jobs.set(self.running_count)
