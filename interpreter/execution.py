"""One job's life on whatever runs it: claim it (pending -> running, a compare-and-set), run it
with the runner, record how it ended. The in-process dispatcher and the PostgreSQL worker both
drive jobs through this, so a job behaves the same wherever it runs.

Every status change goes through the store's compare-and-set, so a job cancelled by the API stays
cancelled whatever the runner finds later: its result is attached, its status kept. And every
write an attempt makes when it ends (outputs, final status, attached result) expects the job to
still hold that attempt's fencing token (``store.base.fencing_token``): an attempt that resumes
after its worker was declared lost and its job re-queued writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from interpreter.errors import StoreError
from interpreter.job import CapturedOutput, Job, JobStatus, utcnow
from interpreter.metrics import Metrics
from interpreter.runner import Finish, JobRunner
from interpreter.store.base import JobStore, fencing_token
from interpreter.watch import FinalWatch

logger = logging.getLogger(__name__)

STORE_RETRY_S = (0.1, 0.5, 1.0, 2.0)
T = TypeVar("T")


class Execution:
    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        metrics: Metrics,
        watch: FinalWatch,
        outputs_in_store: bool = False,
    ) -> None:
        self.store = store
        self.runner = runner
        self.metrics = metrics
        self.watch = watch
        # Scale-out: outputs go into the store (every replica serves them), not files here.
        self.outputs_in_store = outputs_in_store
        self._durations_s: deque[float] = deque(maxlen=50)
        self.processed = 0

    @property
    def mean_duration_s(self) -> float:
        """Mean run time of recent jobs (1 s before any has run)."""
        return sum(self._durations_s) / len(self._durations_s) if self._durations_s else 1.0

    async def claim(self, job_id: str, **changes: Any) -> Job | None:
        """pending -> running before the process starts: a cancelled job never runs, and the
        store says "running" for as long as the code runs. None: not pending any more."""
        job = await self.store.transition(job_id, JobStatus.RUNNING, started_at=utcnow(), **changes)
        if job is not None:
            log_transition(job, JobStatus.RUNNING)
        return job

    async def run(
        self, job: Job, cancel: asyncio.Event, reason: Callable[[], str | None] = lambda: None
    ) -> None:
        """Run a claimed job to its end and record it. ``reason()``: why it was cancelled, when
        the cancel came from the server itself (its shutdown) rather than the API."""
        try:
            finish = await self.runner.run(job, cancel)
        except Exception as exc:  # our fault, not the job's: say so and free the slot
            logger.exception("runner failed", extra={"job_id": job.id})
            # the exception's text may name host paths: the log has it, the job its kind only
            why = f"internal error ({type(exc).__name__}); the server's log has the details"
            finish = Finish(JobStatus.FAILED, None, why, None)
        await self._finish(job, finish, reason())

    async def _finish(self, job: Job, finish: Finish, reason: str | None) -> None:
        """Record how the attempt ``job`` (as claimed) ended. Every write expects the attempt to
        still own the job (its fencing token): an attempt whose worker was declared lost, its
        job queued and run again since, writes nothing, and it is not retried."""
        error = (
            reason if (finish.status == JobStatus.CANCELLED and reason) else finish.error_message
        )
        token = fencing_token(job)
        if self.outputs_in_store and finish.result is not None:
            outputs = await asyncio.to_thread(self._take_outputs, job.id)
            kept = await self.with_retries(
                job.id, lambda: self.store.put_outputs(job.id, outputs, expect=token)
            )
            if not kept and await self._stale(job):
                return
        done = await self.with_retries(
            job.id,
            lambda: self.store.transition(
                job.id,
                finish.status,
                expect=token,
                completed_at=utcnow(),
                execution_time_ms=finish.execution_time_ms,
                error_message=error,
                result=finish.result,
            ),
        )
        if done is None:  # cancelled by the API meanwhile: keep its status, attach what ran
            attached = finish.result is not None and await self.store.attach_result(
                job.id, finish.result, finish.execution_time_ms, expect=token
            )
            if not attached:
                await self._stale(job)  # logs it when another attempt owns the job
            return
        self.watch.notify(job.id)
        self.processed += 1
        if finish.execution_time_ms is not None:
            seconds = finish.execution_time_ms / 1000
            self._durations_s.append(seconds)
            self.metrics.job_duration.labels(language=job.request.language).observe(seconds)
        self.metrics.jobs_finished.labels(status=done.status.value).inc()
        log_transition(done, done.status)

    async def _stale(self, job: Job) -> bool:
        """Whether the attempt ``job`` lost the job to another one (or the job is gone): then
        its refused write is logged, never retried."""
        now = await self.store.get(job.id)
        token = fencing_token(job)
        if now is not None and fencing_token(now) == token:
            return False
        logger.warning(
            "write of a stale attempt refused",
            extra={
                "job_id": job.id,
                "attempts": job.attempts,
                "worker_id": job.worker_id,
                "current_attempts": now.attempts if now is not None else None,
            },
        )
        return True

    def _take_outputs(self, job_id: str) -> CapturedOutput:
        """The job's (already capped) output files, read and removed."""
        paths = self.runner.paths
        captured = []
        for path in (paths.stdout(job_id), paths.stderr(job_id)):
            try:
                captured.append(path.read_bytes())
                path.unlink()
            except FileNotFoundError:
                captured.append(b"")
        return CapturedOutput(*captured)

    async def with_retries(self, job_id: str, write: Callable[[], Awaitable[T]]) -> T:
        """A finished job must reach its final status: retry the store through short outages.
        If it stays down, the error propagates (a restart or the worker-loss check ends it)."""
        for delay_s in STORE_RETRY_S:
            try:
                return await write()
            except StoreError:
                logger.warning("store write failed; retrying", extra={"job_id": job_id})
                await asyncio.sleep(delay_s)
        return await write()


async def cancel_in_store(
    store: JobStore, watch: FinalWatch, metrics: Metrics, job_id: str
) -> Job | None:
    """A cancel by request: pending or running -> cancelled (compare-and-set), announced.
    None when the job was final already. Stopping it where it runs is the queue's part."""
    cancelled = await store.transition(
        job_id, JobStatus.CANCELLED, completed_at=utcnow(), error_message="cancelled by request"
    )
    if cancelled is not None:
        watch.notify(job_id)
        metrics.jobs_finished.labels(status="cancelled").inc()
    return cancelled


def log_transition(job: Job, status: JobStatus) -> None:
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
