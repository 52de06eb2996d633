"""The procrastinate app every process builds (API replicas defer and abort; workers run)."""

from __future__ import annotations

import procrastinate

QUEUE = "interpreter"
TASK = "interpreter.run_job"


def make_app(dsn: str, pool_size: int, timeout_s: float = 30.0) -> procrastinate.App:
    """``timeout_s``: how long a statement waits for a pooled connection."""
    connector = procrastinate.PsycopgConnector(
        conninfo=dsn, min_size=1, max_size=pool_size, timeout=timeout_s
    )
    return procrastinate.App(connector=connector)


def queue_entry(job_id: str) -> procrastinate.jobs.Job:
    """The procrastinate job that runs our job ``job_id``. No retry strategy on purpose: an abort
    would then end as failed; a lost worker's job is re-run by the worker-loss check instead."""
    return procrastinate.jobs.Job(
        queue=QUEUE,
        lock=None,
        queueing_lock=None,
        task_name=TASK,
        task_kwargs={"job_id": job_id},
    )
