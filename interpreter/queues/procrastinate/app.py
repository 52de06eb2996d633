"""The procrastinate app every process builds (API replicas defer and abort; workers run)."""

from __future__ import annotations

from typing import Any

import procrastinate

QUEUE = "interpreter"
TASK = "interpreter.run_job"
SESSION_TASK = "interpreter.session"  # an operation on a session (sessions/remote.py)


def make_app(dsn: str, pool_size: int, timeout_s: float = 30.0) -> procrastinate.App:
    """``timeout_s``: how long a statement waits for a pooled connection."""
    connector = procrastinate.PsycopgConnector(
        conninfo=dsn, min_size=1, max_size=pool_size, timeout=timeout_s
    )
    return procrastinate.App(connector=connector)


def queue_entry(job_id: str, queue: str = QUEUE) -> procrastinate.jobs.Job:
    """The procrastinate job that runs our job ``job_id`` (on ``queue``: a session's execution
    goes to the queue of the worker that holds the session). No retry strategy on purpose: an
    abort would then end as failed; a lost worker's job is re-run by the worker-loss check."""
    return procrastinate.jobs.Job(
        queue=queue,
        lock=None,
        queueing_lock=None,
        task_name=TASK,
        task_kwargs={"job_id": job_id},
    )


def session_operation(
    queue: str,
    operation: str,
    session_id: str,
    owner: str | None,
    request: dict[str, Any] | None = None,
) -> procrastinate.jobs.Job:
    """Ask the worker listening on ``queue`` to start, delete, interrupt or restart a session."""
    return procrastinate.jobs.Job(
        queue=queue,
        lock=None,
        queueing_lock=None,
        task_name=SESSION_TASK,
        task_kwargs={
            "operation": operation,
            "session_id": session_id,
            "owner": owner,
            "request": request,
        },
    )
