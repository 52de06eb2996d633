"""The queue seam: what the service asks of whatever holds and runs the jobs.

Two implementations: ``LocalQueue`` (embedded: an in-process FIFO over the local store) and
``procrastinate.PostgresQueue`` (scale-out: procrastinate on PostgreSQL, jobs run by workers
anywhere). Both, and the service's long polls, wait for a final record with ``until_final``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from interpreter.job import InputFile, Job
from interpreter.metrics import Metrics
from interpreter.watch import JobWatch

CANCEL_SLACK_S = 5.0


def cancel_wait_s(kill_grace_s: float, scan_max_s: float) -> float:
    """How long a cancel waits for a running job's final record: the kill's grace, the scan of
    the job's files after it, and some slack."""
    return kill_grace_s + scan_max_s + CANCEL_SLACK_S


async def until_final(
    read: Callable[[], Awaitable[Job | None]],
    watch: JobWatch,
    job_id: str,
    wait_s: float,
    recheck_s: float,
) -> Job | None:
    """The job as ``read`` returns it once final, or as it is after ``wait_s`` seconds (None
    once it is gone). Woken at once by ``watch``; re-read every ``recheck_s`` as well, in case
    a final status went unannounced."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(wait_s, 0.0)
    job = await read()
    while job is not None and not job.is_final:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await watch.wait(job_id, min(remaining, recheck_s))
        job = await read()
    return job


@dataclass(frozen=True, slots=True)
class QueueState:
    """What /health and /metrics report of the queue."""

    backend: str  # "in-process" or "procrastinate"
    state: str  # healthy, degraded or unhealthy
    why: str | None  # what is wrong, when not healthy
    depth: int  # jobs waiting to start
    running: int  # jobs running (here, or on every worker with PostgreSQL)
    workers_alive: int | None = None  # workers seen recently (PostgreSQL)


class JobQueue(Protocol):
    watch: JobWatch  # woken when a job this process knows of reaches a final status
    metrics: Metrics
    recheck_s: float  # how often a long poll re-reads the store anyway, in case it missed one

    @property
    def accepting(self) -> bool:
        """False once the server is shutting down."""

    async def start(self) -> None: ...

    async def stop(self, grace_s: float) -> None: ...

    async def submit(self, job: Job, inputs: Sequence[InputFile] = ()) -> tuple[Job, datetime]:
        """Persist a new pending job (with its input files, in the store: whoever runs it reads
        them there) and queue it, within the pending-job caps (raising ``TooManyPendingJobs`` or
        ``QueueFull``); returns it with its estimated start time."""

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a job and return its final record.

        A pending job moves to cancelled at once (compare-and-set: it never runs). A running
        job is stopped by whoever runs it, who writes its final record: this waits for it
        (bounded) and returns it, ``cancelled`` with what ran, or the status the job reached by
        itself when its process had already exited (completed, failed, timeout). Only when whoever
        runs it does not answer in time is it moved to cancelled in the store as it is.

        None when the job was final already, or another cancel of it was first (then this one
        waits for the job's final record all the same)."""

    async def state(self) -> QueueState: ...
