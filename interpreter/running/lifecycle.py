"""One job's life on whatever runs it: claim it (pending -> running, a compare-and-set), run it
with the runner, record how it ended. The local queue and the PostgreSQL worker both
drive jobs through this, so a job behaves the same wherever it runs.

Every status change goes through the store's compare-and-set. A running job's cancel is the
runner's to carry out: the final status (``cancelled`` when it killed the job, the job's own when
its process had exited first) is written once, with its result, and only then announced. Only a
cancel whose runner did not answer in time moves the job to cancelled in the store itself; the
runner's result is attached to it later, its status kept. And every
write an attempt makes when it ends (outputs, final status, attached result) expects the job to
still hold that attempt's fencing token (``store.base.fencing_token``): an attempt that resumes
after its worker was declared lost and its job re-queued writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from interpreter.errors import ExecutionError, StoreError
from interpreter.job import CapturedOutput, InputFile, Job, JobStatus, utcnow
from interpreter.jobfiles import CaptureLimits, FileRow, capture_directory
from interpreter.metrics import Metrics
from interpreter.running.base import Runner
from interpreter.running.ending import Finish
from interpreter.store.base import JobStore, fencing_token
from interpreter.watch import JobWatch

logger = logging.getLogger(__name__)

STORE_RETRY_S = (0.1, 0.5, 1.0, 2.0)
CANCEL_MESSAGE = "cancelled by request"
RESTART_MESSAGE = "server restarted during execution"
SHUTDOWN_MESSAGE = "cancelled: the server shut down during execution"
T = TypeVar("T")


class Execution:
    def __init__(
        self,
        store: JobStore,
        runner: Runner,
        metrics: Metrics,
        watch: JobWatch,
        outputs_in_store: bool = False,
        capture: CaptureLimits | None = None,
    ) -> None:
        self.store = store
        self.runner = runner
        self.metrics = metrics
        self.watch = watch
        # Scale-out: outputs go into the store (every replica serves them), not files here.
        self.outputs_in_store = outputs_in_store
        # ... and so do the files its directory holds, within these caps.
        self.capture = capture or CaptureLimits()
        self._durations_s: deque[float] = deque(maxlen=50)
        self.processed = 0
        self.retry_until_stored = False  # a worker sets it: see with_retries

    @property
    def mean_duration_s(self) -> float:
        """Mean run time of recent jobs (1 s before any has run)."""
        return sum(self._durations_s) / len(self._durations_s) if self._durations_s else 1.0

    async def claim(self, job_id: str, **changes: Any) -> Job | None:
        """pending -> running before the process starts: a cancelled job never runs, and the
        store says "running" for as long as the code runs. None: not pending any more."""
        job = await self.store.transition(job_id, JobStatus.RUNNING, started_at=utcnow(), **changes)
        if job is not None:
            self.watch.wake(job_id)  # its streams say "running" (scale-out: the database does)
            log_transition(job, JobStatus.RUNNING)
        return job

    async def run(
        self, job: Job, cancel: asyncio.Event, reason: Callable[[], str | None] = lambda: None
    ) -> None:
        """Run a claimed job to its end and record it. ``reason()``: why it was cancelled, when
        the cancel came from the server itself (its shutdown) rather than the API (None: by
        request)."""
        try:
            finish = await self.runner.run(job, cancel, lambda: self._inputs(job))
        except Exception as exc:  # our fault, not the job's: say so and free the slot
            logger.exception("runner failed", extra={"job_id": job.id})
            # the exception's text may name host paths: the log has it, the job its kind only
            why = f"internal error ({type(exc).__name__}); the server's log has the details"
            finish = Finish(JobStatus.FAILED, None, why, None)
        await self._finish(job, finish, reason())

    async def _inputs(self, job: Job) -> Sequence[InputFile]:
        """The job's input files, read from the store (none to read for most jobs);
        ``ExecutionError`` when some are missing."""
        if not job.request.input_file_count:
            return ()
        inputs = await self.with_retries(job.id, lambda: self.store.get_inputs(job.id))
        if len(inputs) != job.request.input_file_count:
            raise ExecutionError("the job's input files are no longer in the job store")
        return inputs

    async def _drop_inputs(self, job: Job) -> None:
        """A final job runs no more: its input files leave the store (a failure here only
        leaves them until the job itself is deleted)."""
        if not job.request.input_file_count:
            return
        try:
            await self.store.delete_inputs(job.id)
        except StoreError as exc:
            logger.warning("input files not deleted: %s", exc, extra={"job_id": job.id})

    async def _finish(self, job: Job, finish: Finish, reason: str | None) -> None:
        """Record how the attempt ``job`` (as claimed) ended. Every write expects the attempt to
        still own the job (its fencing token): an attempt whose worker was declared lost, its
        job queued and run again since, writes nothing, and it is not retried."""
        recorded = await self._record(job, finish, reason)
        if self.outputs_in_store and recorded:  # final: streams read job_outputs, not chunks
            try:
                await self.store.delete_chunks(job.id)
            except StoreError as exc:  # retention deletes them with the job
                logger.warning("live output not deleted: %s", exc, extra={"job_id": job.id})

    async def _record(self, job: Job, finish: Finish, reason: str | None) -> bool:
        """False when the attempt was stale (another one owns the job): it wrote nothing."""
        # The runner ends a job as cancelled only when it killed it for ``cancel``: by request,
        # unless the server said otherwise (its shutdown).
        error = (
            (reason or CANCEL_MESSAGE)
            if finish.status == JobStatus.CANCELLED
            else finish.error_message
        )
        token = fencing_token(job)
        if self.outputs_in_store and finish.result is not None:
            outputs = await asyncio.to_thread(self._take_outputs, job.id)
            kept = await self.with_retries(
                job.id, lambda: self.store.put_outputs(job.id, outputs, expect=token)
            )
            if not kept and await self._stale(job):
                return False
            files = await self._capture_files(job)
            if files is not None:
                kept = await self.with_retries(
                    job.id, lambda: self.store.put_files(job.id, files, expect=token)
                )
                if not kept and await self._stale(job):
                    return False
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
        if done is None:  # cancelled in the store meanwhile (its runner did not answer in
            # time): keep its status, attach what ran
            attached = finish.result is not None and await self.store.attach_result(
                job.id, finish.result, finish.execution_time_ms, expect=token
            )
            if not attached:
                return not await self._stale(job)  # logs it when another attempt owns the job
            await self._drop_inputs(job)
            return True
        self.watch.notify(job.id)
        await self._drop_inputs(job)
        self.processed += 1
        if finish.execution_time_ms is not None:
            seconds = finish.execution_time_ms / 1000
            self._durations_s.append(seconds)
            self.metrics.job_duration.labels(language=job.request.language).observe(seconds)
        self.metrics.jobs_finished.labels(status=done.status.value).inc()
        log_transition(done, done.status)
        return True

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

    async def _capture_files(self, job: Job) -> list[FileRow] | None:
        """The job's directory as the store keeps it; None when there is none, or when reading
        it failed (the job ends all the same, its files unlisted; the log says why)."""
        try:
            return await asyncio.to_thread(capture_directory, self.runner.paths, job, self.capture)
        except Exception:
            logger.exception("a job's files not captured", extra={"job_id": job.id})
            return None

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
        """A finished job must reach its final status: retry the store through outages. The
        embedded server gives up after a few seconds (the error propagates: a restart ends the
        job); a worker (``retry_until_stored``) retries until the database answers, its job
        fenced meanwhile, so that an outage of any length loses no result."""
        attempt = 0
        while True:
            try:
                return await write()
            except StoreError:
                if attempt >= len(STORE_RETRY_S) and not self.retry_until_stored:
                    raise
                if attempt in (0, len(STORE_RETRY_S)):
                    logger.warning("store write failed; retrying", extra={"job_id": job_id})
                await asyncio.sleep(STORE_RETRY_S[min(attempt, len(STORE_RETRY_S) - 1)])
                attempt += 1


async def cancel_in_store(
    store: JobStore,
    watch: JobWatch,
    metrics: Metrics,
    job_id: str,
    source: JobStatus | None = None,
) -> Job | None:
    """A cancel by request written at once: pending (or, with ``source=None``, running) ->
    cancelled (compare-and-set), announced and counted only when it moved. None when the job
    was not in ``source`` (or was final already). A pending job is cancelled so (it never ran);
    a running one only when whoever runs it did not answer the queue's request to stop it."""
    expect = None if source is None else {"status": source.value}
    cancelled = await store.transition(
        job_id,
        JobStatus.CANCELLED,
        expect=expect,
        completed_at=utcnow(),
        error_message=CANCEL_MESSAGE,
    )
    if cancelled is not None:
        watch.notify(job_id)
        metrics.jobs_finished.labels(status="cancelled").inc()
        if cancelled.request.input_file_count:  # it will never read them
            try:
                await store.delete_inputs(job_id)
            except StoreError as exc:  # retention deletes them with the job
                logger.warning("input files not deleted: %s", exc, extra={"job_id": job_id})
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
