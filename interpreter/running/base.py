"""The runner seam: what the rest of the package asks of whatever runs a job.

``runner.JobRunner`` is the real one (a confined process per job); tests pass a fake that starts
no process (tests/fakes.py). The local queue, the job's lifecycle, the PostgreSQL worker and the
API reach a runner only through these members.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from interpreter.job import InputFile, Job
from interpreter.limits import ResourceLimits
from interpreter.process.filetrack import ScanLimits
from interpreter.running.ending import Finish
from interpreter.sandbox.base import Sandbox
from interpreter.store.base import JobStore
from interpreter.workspace import JobPaths

# Reads a job's input files from the store (``ExecutionError`` when they are gone): called by the
# runner once the job's directory is its own, so that their bytes are held only while written.
InputReader = Callable[[], Awaitable[Sequence[InputFile]]]


async def no_inputs() -> Sequence[InputFile]:
    return ()


@dataclass(frozen=True, slots=True)
class RunLimits:
    output_bytes: int
    kill_grace_s: float
    scan: ScanLimits
    resources: ResourceLimits | None = None  # the default of jobs stored without limits


class SessionExecutor(Protocol):
    async def execute(self, job: Job, cancel: asyncio.Event) -> Finish:
        """Run a job of a session (``request.session_id``) in its kernel."""


class Runner(Protocol):
    @property
    def paths(self) -> JobPaths:
        """Where a job's files live: its output files (``stdout``, ``stderr``) are read there
        after the run, and a worker sweeps ``workspace_root``."""

    @property
    def limits(self) -> RunLimits:
        """How long a kill may take (``kill_grace_s``) and the file scan after it
        (``scan.max_seconds``): what a cancel or a shutdown waits for, beyond the job."""

    @property
    def sandbox(self) -> Sandbox:
        """What confines the jobs (``GET /sandbox`` describes it)."""

    async def run(self, job: Job, cancel: asyncio.Event, inputs: InputReader = no_inputs) -> Finish:
        """Run the claimed ``job`` to its end, its output written to ``paths.stdout(job.id)``
        and ``paths.stderr(job.id)``. A job with input files (``request.input_file_count``)
        gets what ``inputs()`` reads written into its working directory before it starts (owned
        by the job, and not counted as files it created). ``cancel`` set: stop
        it, and end it as ``cancelled`` unless it had ended by itself first. Raises only for the
        server's own faults."""

    def close(self) -> None:
        """Release what the runner holds, once no job runs (blocking: called in a thread)."""

    async def recover_after_crash(self, store: JobStore, jobs: Sequence[Job]) -> None:
        """Clean up after ``jobs`` (running when the server died, already failed in ``store``)
        and attach to each what it had produced."""
