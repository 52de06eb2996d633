"""A runner that starts no process: each job's code is a script of what the job "does".

``FakeRunner`` implements ``interpreter.running.base.Runner``. It writes the job's output files
where the embedded service reads them (``paths.stdout(id)``, ``paths.stderr(id)``) and returns a
``Finish`` shaped like the real runner's, so the queue, the lifecycle and the API handle it as
they would a real run. It records what it ran, and a test decides when a blocked job ends: no
sleeps, no timing.

The code is read one line at a time, in order (blank lines are skipped):

``print(<python literal>)``  write the literal's text and a newline to stdout (so real-looking
                             code such as ``print('hi')`` works)
``stdout:<text>``            write ``<text>`` and a newline to stdout
``stderr:<text>``            write ``<text>`` and a newline to stderr
``fail:<message>``           write ``<message>`` to stderr and exit with code 1: ``failed``, its
                             error message the message (as the real runner reads stderr's last
                             line)
``exit:<n>``                 exit with code ``n`` (0: ``completed``; else ``failed``)
``timeout``                  killed at its timeout: ``timeout``, SIGKILL, "timed out after N s"
``signal:<n>``               killed by signal ``n``: ``failed``, termination reason ``signal``
``crash``                    the runner itself raises (the server's fault, not the job's)
``block``                    run until cancelled (then end ``cancelled``) or until the test calls
                             ``release(job_id)`` (then go on with the next line)
``hold``                     run until ``release(job_id)``, whatever cancel comes meanwhile (a
                             process that exits by itself before the kill lands); the cancel is
                             still recorded in ``cancels_seen``

Anything else raises ``ValueError`` (the job then fails with an internal error): a typo in a test
shows at once. Code that reaches its end exits with code 0: ``completed``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from interpreter.job import InputFile, Job, JobResult, JobStatus, TerminationReason
from interpreter.process.filetrack import ScanLimits
from interpreter.running.base import InputReader, RunLimits, Runner, no_inputs
from interpreter.running.ending import CANCELLED_BEFORE_START, Finish
from interpreter.sandbox.base import NoSandbox, Sandbox
from interpreter.store.base import JobStore
from interpreter.workspace import JobPaths

FAKE_LIMITS = RunLimits(
    output_bytes=1024 * 1024,
    kill_grace_s=0.2,
    scan=ScanLimits(max_entries=1_000, max_seconds=0.5),
    resources=None,
)
EXECUTION_TIME_MS = 1.5  # every fake run "takes" this long: a fixed number, not a measure
FAKE_PID = 4242


class _Ended(Exception):
    """How a script stops before its last line."""

    def __init__(self, finish: Finish) -> None:
        self.finish = finish


@dataclass
class _Streams:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)


class FakeRunner:
    """A ``Runner`` whose jobs are scripts (see the module's docstring); no process starts."""

    def __init__(
        self,
        paths: JobPaths,
        limits: RunLimits = FAKE_LIMITS,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.paths = paths
        self.limits = limits
        self.sandbox: Sandbox = sandbox or NoSandbox()
        self.started: list[str] = []  # job ids, in the order their runs began
        self.jobs: dict[str, Job] = {}  # every job it ran, as claimed
        self.inputs: dict[str, tuple[InputFile, ...]] = {}  # the input files each run was given
        self.finishes: dict[str, Finish] = {}  # how each run ended (what it returned)
        self.running: set[str] = set()
        self.peak_running = 0  # the most jobs it ran at once
        self.cancels_seen: set[str] = set()  # jobs whose cancel it saw while they ran
        self.recovered: list[str] = []  # jobs handed to recover_after_crash
        self.closed = False
        self._started_events: dict[str, asyncio.Event] = {}
        self._ended_events: dict[str, asyncio.Event] = {}
        self._cancel_seen_events: dict[str, asyncio.Event] = {}
        self._releases: dict[str, asyncio.Event] = {}

    # -- what a test drives -----------------------------------------------------------------
    def release(self, job_id: str) -> None:
        """Let the ``block`` or ``hold`` of ``job_id`` end (now, or as soon as it reaches it)."""
        self._event(self._releases, job_id).set()

    async def wait_started(self, job_id: str, timeout_s: float = 5.0) -> None:
        """Until the run of ``job_id`` has begun (fails after ``timeout_s``: a bound, not a
        schedule)."""
        await asyncio.wait_for(self._event(self._started_events, job_id).wait(), timeout_s)

    async def wait_ended(self, job_id: str, timeout_s: float = 5.0) -> None:
        """Until the run of ``job_id`` has returned its ``Finish``."""
        await asyncio.wait_for(self._event(self._ended_events, job_id).wait(), timeout_s)

    async def wait_cancel_seen(self, job_id: str, timeout_s: float = 5.0) -> None:
        """Until the running ``job_id`` has seen its cancel event set."""
        await asyncio.wait_for(self._event(self._cancel_seen_events, job_id).wait(), timeout_s)

    def ran(self, job_id: str) -> bool:
        return job_id in self.jobs

    # -- the Runner -------------------------------------------------------------------------
    async def run(self, job: Job, cancel: asyncio.Event, inputs: InputReader = no_inputs) -> Finish:
        self.started.append(job.id)
        self.jobs[job.id] = job
        self.inputs[job.id] = tuple(await inputs())
        self.running.add(job.id)
        self.peak_running = max(self.peak_running, len(self.running))
        self._event(self._started_events, job.id).set()
        try:
            if cancel.is_set():  # as the real runner: a job cancelled before its start
                self._saw_cancel(job.id)
                finish = CANCELLED_BEFORE_START
            else:
                finish = await self._script(job, cancel)
            self.finishes[job.id] = finish
            return finish
        finally:
            self.running.discard(job.id)
            self._event(self._ended_events, job.id).set()

    def close(self) -> None:
        self.closed = True

    async def recover_after_crash(self, store: JobStore, jobs: Sequence[Job]) -> None:
        """As the real runner: each job keeps, as its result, what its output files hold."""
        for job in jobs:
            self.recovered.append(job.id)
            result = JobResult(
                stdout_bytes=_size(self.paths.stdout(job.id)),
                stderr_bytes=_size(self.paths.stderr(job.id)),
                files_complete=False,
                files_note="not tracked: the server restarted while the job ran",
                working_directory=self._workdir(job),
                termination_reason=TerminationReason.SANDBOX_ERROR,
            )
            await store.attach_result(job.id, result, None)

    # -- the script -------------------------------------------------------------------------
    async def _script(self, job: Job, cancel: asyncio.Event) -> Finish:
        streams = _Streams()
        try:
            for raw in job.request.code.splitlines():
                line = raw.strip()
                if line:
                    await self._step(job, line, streams, cancel)
            finish = self._exited(job, 0, streams)
        except _Ended as ended:
            finish = ended.finish
        self._write_outputs(job.id, streams)
        return finish

    async def _step(self, job: Job, line: str, streams: _Streams, cancel: asyncio.Event) -> None:
        word, colon, arg = line.partition(":")
        if line.startswith("print(") and line.endswith(")"):
            streams.stdout += f"{ast.literal_eval(line[len('print(') : -1])}\n".encode()
        elif word == "stdout" and colon:
            streams.stdout += f"{arg}\n".encode()
        elif word == "stderr" and colon:
            streams.stderr += f"{arg}\n".encode()
        elif word == "fail" and colon:
            streams.stderr += f"{arg}\n".encode()
            raise _Ended(self._exited(job, 1, streams))
        elif word == "exit" and colon:
            raise _Ended(self._exited(job, int(arg), streams))
        elif line == "timeout":
            raise _Ended(
                self._killed(
                    job,
                    JobStatus.TIMEOUT,
                    TerminationReason.TIMEOUT,
                    f"timed out after {job.request.timeout_s:g} s",
                    signal.SIGKILL,
                    streams,
                )
            )
        elif word == "signal" and colon:
            number = int(arg)
            raise _Ended(
                self._killed(
                    job,
                    JobStatus.FAILED,
                    TerminationReason.SIGNAL,
                    f"killed by signal {number} ({signal.Signals(number).name})",
                    number,
                    streams,
                )
            )
        elif line == "crash":
            raise RuntimeError("the fake runner crashed, as asked")
        elif line == "block":
            if await self._until_released(job.id, cancel, stop_on_cancel=True):
                raise _Ended(
                    self._killed(
                        job,
                        JobStatus.CANCELLED,
                        TerminationReason.CANCELLED,
                        "cancelled",
                        signal.SIGKILL,
                        streams,
                    )
                )
        elif line == "hold":
            await self._until_released(job.id, cancel, stop_on_cancel=False)
        else:
            raise ValueError(f"the fake runner does not know {line!r}")

    async def _until_released(
        self, job_id: str, cancel: asyncio.Event, stop_on_cancel: bool
    ) -> bool:
        """Wait for the job's release; True when its cancel came first and stops it."""
        release = self._event(self._releases, job_id)
        released = asyncio.ensure_future(release.wait())
        cancelled = asyncio.ensure_future(cancel.wait())
        try:
            while not release.is_set():
                waiters = {released} if cancelled.done() else {released, cancelled}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if cancel.is_set():
                    self._saw_cancel(job_id)
                    if stop_on_cancel and not release.is_set():
                        return True
            return False
        finally:
            for waiter in (released, cancelled):
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    def _saw_cancel(self, job_id: str) -> None:
        self.cancels_seen.add(job_id)
        self._event(self._cancel_seen_events, job_id).set()

    # -- results, shaped as the real runner's ------------------------------------------------
    def _exited(self, job: Job, code: int, streams: _Streams) -> Finish:
        if code == 0:
            return self._finish(job, JobStatus.COMPLETED, TerminationReason.EXIT, None, streams, 0)
        lines = bytes(streams.stderr).decode(errors="replace").strip().splitlines()
        error = lines[-1][:500] if lines else f"exited with code {code}"
        return self._finish(job, JobStatus.FAILED, TerminationReason.EXIT, error, streams, code)

    def _killed(
        self,
        job: Job,
        status: JobStatus,
        reason: TerminationReason,
        error: str,
        number: int,
        streams: _Streams,
    ) -> Finish:
        return self._finish(job, status, reason, error, streams, None, number)

    def _finish(
        self,
        job: Job,
        status: JobStatus,
        reason: TerminationReason,
        error: str | None,
        streams: _Streams,
        exit_code: int | None,
        signal_number: int | None = None,
    ) -> Finish:
        cap = self.limits.output_bytes
        result = JobResult(
            exit_code=exit_code,
            signal=signal_number,
            stdout_bytes=len(streams.stdout),
            stderr_bytes=len(streams.stderr),
            stdout_truncated=len(streams.stdout) > cap,
            stderr_truncated=len(streams.stderr) > cap,
            resource_usage={
                "pid": FAKE_PID,
                "cpu_percent": {"average": 0.0},
                "cpu_time_s": {"user": 0.0, "system": 0.0, "total": 0.0},
                "memory_bytes": {"peak_rss": 0, "peak_vms": 0},
            },
            environment_snapshot=dict(job.request.environment),
            working_directory=self._workdir(job),
            termination_reason=reason,
        )
        return Finish(status, result, error, EXECUTION_TIME_MS)

    def _write_outputs(self, job_id: str, streams: _Streams) -> None:
        cap = self.limits.output_bytes
        self.paths.outputs.mkdir(parents=True, exist_ok=True)
        self.paths.stdout(job_id).write_bytes(bytes(streams.stdout[:cap]))
        self.paths.stderr(job_id).write_bytes(bytes(streams.stderr[:cap]))

    def _workdir(self, job: Job) -> str:
        named = job.request.working_directory
        return str(self.paths.named(named) if named else self.paths.workspace(job.id))

    @staticmethod
    def _event(events: dict[str, asyncio.Event], job_id: str) -> asyncio.Event:
        return events.setdefault(job_id, asyncio.Event())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _is_a_runner(runner: FakeRunner) -> Runner:
    """mypy checks here that ``FakeRunner`` implements the protocol."""
    return runner
