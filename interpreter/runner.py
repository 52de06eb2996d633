"""Turn a job into a process and the process's outcome into the job's final status and result."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interpreter.environment import build_environment, redact
from interpreter.errors import ExecutionError, InterpreterError, InvalidWorkingDirectory
from interpreter.executor import ProcessOutcome, ProcessSpec, ScanLimits, run_process
from interpreter.job import Job, JobResult, JobStatus
from interpreter.languages import LanguageRegistry
from interpreter.orphans import kill_leftovers
from interpreter.workspace import JobPaths, remove_tree, resolve_working_directory

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunLimits:
    output_bytes: int
    kill_grace_s: float
    scan: ScanLimits


@dataclass(frozen=True, slots=True)
class Finish:
    """How a run ended: the status to move to and what to store with it."""

    status: JobStatus
    result: JobResult | None
    error_message: str | None
    execution_time_ms: float | None


# Lines that follow the error itself: stack frames ("    at f (file:1:2)") and node's banner.
_NOT_THE_ERROR = re.compile(r"^\s+at\s|^Node\.js v\d")


def _last_line(path: Path, max_bytes: int = 4096) -> str | None:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [
        line.strip()
        for line in tail.splitlines()
        if line.strip() and not _NOT_THE_ERROR.match(line)
    ]
    return lines[-1][:500] if lines else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _usage(outcome: ProcessOutcome) -> dict[str, Any]:
    usage = outcome.usage
    return {
        "pid": usage.pid,
        "cpu_percent": {"average": round(usage.cpu_percent_avg, 2)},
        "cpu_time_s": {
            "user": round(usage.cpu_user_s, 6),
            "system": round(usage.cpu_system_s, 6),
            "total": round(usage.cpu_user_s + usage.cpu_system_s, 6),
        },
        "memory_bytes": {"peak_rss": usage.peak_rss_bytes, "peak_vms": usage.peak_vms_bytes},
    }


def _status_and_error(
    job: Job, outcome: ProcessOutcome, stderr: Path
) -> tuple[JobStatus, str | None]:
    if outcome.termination == "timeout":
        return JobStatus.TIMEOUT, f"timed out after {job.request.timeout_s:g} s"
    if outcome.termination == "cancelled":
        return JobStatus.CANCELLED, "cancelled"
    if outcome.signal is not None:
        return (
            JobStatus.FAILED,
            f"killed by signal {outcome.signal} ({_signal_name(outcome.signal)})",
        )
    if outcome.exit_code != 0:
        return JobStatus.FAILED, _last_line(stderr) or f"exited with code {outcome.exit_code}"
    return JobStatus.COMPLETED, None


class JobRunner:
    def __init__(
        self, registry: LanguageRegistry, paths: JobPaths, limits: RunLimits, job_path: str
    ):
        self.registry = registry
        self.paths = paths
        self.limits = limits
        self.job_path = job_path
        # Removing a job's TMPDIR costs a few journaled-disk syscalls: one thread does it, off
        # the path between a job's exit and its final status.
        self._janitor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="janitor")

    def close(self) -> None:
        self._janitor.shutdown(wait=True)

    def working_directory(self, job: Job) -> Path:
        if job.request.working_directory is None:
            return self.paths.workspace(job.id)
        # Checked again now: another job may have swapped the directory for a symlink since
        # the submission was validated.
        try:
            return resolve_working_directory(
                self.paths.workspace_root, job.request.working_directory
            )
        except InvalidWorkingDirectory as exc:
            raise ExecutionError(f"working directory refused at start: {exc.message}") from exc

    def clean_up_after_crash(self, jobs: Sequence[Job]) -> None:
        """Kill what the given jobs (running when the server died) left behind; blocking."""
        tmpdirs = {str(self.paths.tmpdir(job.id)) for job in jobs}
        workdirs = {
            str(self.paths.workspace(j.id)) for j in jobs if j.request.working_directory is None
        }
        kill_leftovers(tmpdirs, workdirs)
        for job in jobs:
            remove_tree(self.paths.tmpdir(job.id))
            for language in self.registry.languages.values():
                self.paths.code_file(job.id, language.extension).unlink(missing_ok=True)

    @staticmethod
    def _remove_scratch(tmpdir: Path, code_file: Path | None) -> None:
        remove_tree(tmpdir)
        if code_file is not None:
            code_file.unlink(missing_ok=True)

    async def run(self, job: Job, cancel: asyncio.Event) -> Finish:
        try:
            return await self._run(job, cancel)
        except InterpreterError as exc:
            return Finish(JobStatus.FAILED, None, exc.message, None)

    async def _run(self, job: Job, cancel: asyncio.Event) -> Finish:
        language = self.registry.lookup(job.request.language)
        if not language.available:
            raise ExecutionError(f"the {language.name} interpreter is not available on this host")
        cwd = self.working_directory(job)
        fresh = job.request.working_directory is None
        tmpdir = self.paths.tmpdir(job.id)
        argv = language.inline_argv(job.request.code)
        code_file = None if argv else self.paths.code_file(job.id, language.extension)
        try:
            tmpdir.mkdir()
            if fresh:
                cwd.mkdir()
            else:
                cwd.mkdir(parents=True, exist_ok=True)
            if code_file is not None:
                code_file.write_text(job.request.code, encoding="utf-8")
                argv = language.argv(str(code_file))
        except (OSError, UnicodeError) as exc:
            self._janitor.submit(self._remove_scratch, tmpdir, code_file)
            raise ExecutionError(f"cannot prepare the job's directories: {exc}") from exc
        assert argv is not None
        env = build_environment(
            path=self.job_path, home=str(cwd), tmpdir=str(tmpdir), extra=job.request.environment
        )
        spec = ProcessSpec(
            argv=argv,
            cwd=cwd,
            env=env,
            timeout_s=job.request.timeout_s,
            stdout_path=self.paths.stdout(job.id),
            stderr_path=self.paths.stderr(job.id),
            output_limit_bytes=self.limits.output_bytes,
            kill_grace_s=self.limits.kill_grace_s,
            track_files=job.request.capture_files,
            cwd_is_fresh=fresh,
            scan_limits=self.limits.scan,
        )
        try:
            if cancel.is_set():
                return Finish(JobStatus.CANCELLED, None, "cancelled", None)
            outcome = await run_process(spec, cancel)
        finally:
            self._janitor.submit(self._remove_scratch, tmpdir, code_file)
        status, error = _status_and_error(job, outcome, spec.stderr_path)
        result = JobResult(
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            stdout_bytes=outcome.stdout.total_bytes,
            stderr_bytes=outcome.stderr.total_bytes,
            stdout_truncated=outcome.stdout.truncated,
            stderr_truncated=outcome.stderr.truncated,
            files_created=outcome.files.created,
            files_modified=outcome.files.modified,
            files_deleted=outcome.files.deleted,
            files_complete=outcome.files.complete,
            files_note=outcome.files.note,
            resource_usage=_usage(outcome),
            environment_snapshot=redact(env),
            working_directory=str(cwd),
        )
        return Finish(status, result, error, round(outcome.duration_ms, 3))
