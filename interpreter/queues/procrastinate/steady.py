"""procrastinate's worker, made to ride out database outages of any length.

Stock, a worker stops when one of its side tasks fails (its heartbeat hitting the pool's timeout,
its listener failing to reconnect), aborts its running jobs as at a shutdown, and then fails to
unregister: an outage longer than the pool timeout ended every worker with a traceback. Here
every database call of the loop is retried until the database answers again, so a worker never
stops for an outage and its running jobs keep running:

- the heartbeat retries; when it finds its worker row gone (another worker declared this one
  lost, e.g. after a long pause), it registers again under a new id;
- fetching jobs and listening for them back off and try again;
- a job's end is written to the queue once the database answers, unless the attempt was found
  stale (its job re-queued meanwhile and owned by another attempt): then the queue entry, which
  that other attempt now holds, is left alone.

This overrides private methods of procrastinate (pinned below 4 in pyproject.toml); the
scale-out fault tests exercise every one of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from procrastinate import exceptions, jobs
from procrastinate import worker as procrastinate_worker

logger = logging.getLogger("interpreter.worker")

RETRY_S = (0.2, 0.5, 1.0, 2.0)  # then every 2 s until the database answers
HEARTBEAT = (
    "UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = %(worker_id)s RETURNING id"
)


def backoff(attempt: int) -> float:
    return RETRY_S[min(attempt, len(RETRY_S) - 1)]


class SteadyWorker(procrastinate_worker.Worker):
    """A procrastinate worker that never stops for a database outage (see the module)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stale_entries: set[int] = set()  # queue entries our stale attempts must not finish
        self.registrations = 0  # how many times this worker registered again after a loss

    async def _update_heartbeat(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.update_heartbeat_interval)
            try:
                assert self.worker_id is not None
                rows = await self.app.connector.execute_query_all_async(
                    HEARTBEAT, worker_id=self.worker_id
                )
                if not rows:  # declared lost and pruned by another worker: register again
                    old = self.worker_id
                    self.worker_id = await self.app.job_manager.register_worker()
                    self.registrations += 1
                    logger.warning(
                        "this worker had been declared lost; registered again",
                        extra={"old_worker_id": old, "worker_id": self.worker_id},
                    )
            except exceptions.ConnectorException as exc:
                if failures == 0:
                    logger.warning("heartbeat failed; retrying: %s", type(exc.__cause__).__name__)
                failures += 1
                continue
            if failures:
                logger.info("heartbeat back after %d failures", failures)
            failures = 0

    async def _fetch_and_process_jobs(self) -> None:
        try:
            await super()._fetch_and_process_jobs()  # type: ignore[no-untyped-call]
        except exceptions.ConnectorException as exc:
            logger.warning("cannot fetch jobs; retrying: %s", type(exc.__cause__).__name__)
            await asyncio.sleep(RETRY_S[-1])

    def _start_side_tasks(self) -> list[asyncio.Task[Any]]:
        listen_notify, self.listen_notify = self.listen_notify, False
        try:
            tasks: list[asyncio.Task[Any]] = super()._start_side_tasks()
        finally:
            self.listen_notify = listen_notify
        if listen_notify:
            tasks.append(asyncio.create_task(self._listen(), name="listener"))
        return tasks

    async def _listen(self) -> None:
        """Listen for new jobs and aborts; on failure, listen again (polling covers the gap)."""
        attempt = 0
        while True:
            try:
                await self.app.job_manager.listen_for_jobs(
                    on_notification=self._handle_notification, queues=self.queues
                )
            except exceptions.ConnectorException as exc:
                if attempt == 0:
                    logger.warning("job listener lost: %s", type(exc.__cause__).__name__)
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    async def _persist_job_status(
        self,
        job: jobs.Job,
        status: jobs.Status,
        retry_decision: Any,
        context: Any,
        job_result: Any,
    ) -> None:
        assert job.id is not None
        attempt = 0
        while job.id not in self.stale_entries:
            try:
                await super()._persist_job_status(
                    job=job,
                    status=status,
                    retry_decision=retry_decision,
                    context=context,
                    job_result=job_result,
                )
                return
            except exceptions.ConnectorException as exc:
                if not _unreachable(exc):
                    raise
                if attempt == 0:
                    logger.warning(
                        "cannot record a job's end in the queue; retrying",
                        extra={"queue_id": job.id},
                    )
                await asyncio.sleep(backoff(attempt))
                attempt += 1
        self.stale_entries.discard(job.id)
        self._job_ids_to_abort.pop(job.id, None)
        logger.info("queue entry of a stale attempt left alone", extra={"queue_id": job.id})

    async def _shutdown(self, side_tasks: list[asyncio.Task[Any]]) -> None:
        try:
            await super()._shutdown(side_tasks)
        except exceptions.ConnectorException as exc:
            # Unregistering failed: the row ages out and the other workers prune it.
            logger.warning(
                "stopped without unregistering (database unreachable): %s",
                type(exc.__cause__).__name__,
            )


def _unreachable(exc: exceptions.ConnectorException) -> bool:
    """Whether the database could not be reached (then retrying helps), rather than refused."""
    cause = exc.__cause__
    return isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError | OSError)
