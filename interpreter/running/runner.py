"""Turn a job into a process and the process's outcome into the job's final status and result."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from interpreter import tree
from interpreter.config import Settings
from interpreter.environment import build_environment, redact
from interpreter.errors import (
    EnvironmentFailed,
    ExecutionError,
    InterpreterError,
    InvalidRequest,
    InvalidWorkingDirectory,
    RegistryUnavailable,
    StoreError,
)
from interpreter.inputs import write_input_files
from interpreter.job import InputFile, Job, JobResult, JobStatus, TerminationReason
from interpreter.languages import Language, LanguageRegistry
from interpreter.packages import Lease, PackageResolver, Packages, Resolution
from interpreter.process.filetrack import ScanLimits
from interpreter.process.orphans import GUARD, OrphanMarks, kill_leftovers
from interpreter.process.run import run_process
from interpreter.process.spec import OutputListener, ProcessSpec
from interpreter.running.base import InputReader, SessionExecutor, no_inputs
from interpreter.running.base import RunLimits as RunLimits
from interpreter.running.ending import (
    CANCELLED_BEFORE_START,
    Ending,
    Finish,
    not_started,
    read_ending,
    usage_of,
)
from interpreter.running.live import LiveOutput
from interpreter.sandbox import (
    NoSandbox,
    Prepared,
    ResourceLimits,
    Sandbox,
    SandboxJob,
    create_sandbox,
    try_command,
)
from interpreter.store.base import JobStore
from interpreter.workspace import JobPaths

logger = logging.getLogger(__name__)

DIRECTORY_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class _Setup:
    """A job ready to confine: its command, directory and scratch files."""

    argv: tuple[str, ...]
    code: tuple[str, bytes] | None  # (path in the sandbox, content), given as data
    cwd_fd: int  # the working directory, opened beneath the workspace root
    cwd: Path
    fresh: bool  # its own new directory (not a named one)
    inputs: bool  # input files were written into it before it starts
    tmpdir: Path | None  # a host TMPDIR (without a private /tmp)
    code_file: Path | None  # a host code file (without a sandbox that takes it as data)
    timeout_s: float  # what is left of the job's timeout once its directory was free
    venv: Lease | None = None  # its package environment, held until it ends


def _keep_output(path: Path, limit_bytes: int) -> int:
    """The size of an output file a crashed job left (0 if none), cut to ``limit_bytes``;
    never following a symlink."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        logger.warning("a crashed job's output not read: %s", exc)
        return 0
    try:
        size = os.fstat(fd).st_size
        if size > limit_bytes:
            os.ftruncate(fd, limit_bytes)
            size = limit_bytes
        return size
    except OSError as exc:
        logger.warning("a crashed job's output not read: %s", exc)
        return 0
    finally:
        os.close(fd)


async def _collect(sandbox: Sandbox, prepared: Prepared) -> str | None:
    """``sandbox.collect`` in a thread that always runs to its end: it writes through the job's
    directory descriptor, which must stay open (and locked) until it is done, even when this
    task is cancelled meanwhile."""
    copying = asyncio.ensure_future(asyncio.to_thread(sandbox.collect, prepared))
    try:
        return await asyncio.shield(copying)
    except asyncio.CancelledError:
        await asyncio.wait({copying})
        raise


async def _take_directory(fd: int, timeout_s: float, cancel: asyncio.Event) -> float | None:
    """Lock the named directory open as ``fd`` (an ``flock``: every server and worker sharing
    the workspace root sees it), waiting while another job runs there. Jobs in one directory
    thus run one after another, each seeing what the previous ones left. Returns the seconds
    waited; None when the job was cancelled or its timeout passed first."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return loop.time() - started
        except BlockingIOError:
            pass
        if cancel.is_set() or loop.time() - started >= timeout_s:
            return None
        await asyncio.sleep(DIRECTORY_POLL_S)


async def _write_inputs(cwd_fd: int, files: Sequence[InputFile]) -> None:
    """Write them off the loop; their bytes are let go of once written."""
    await asyncio.to_thread(write_input_files, cwd_fd, files)


async def _resolve(resolver: PackageResolver, entries: tuple[str, ...], what: str) -> Resolution:
    """Resolve where the job runs; ``EnvironmentFailed`` (the job's) when it cannot be."""
    try:
        return await resolver.resolve(entries)
    except (InvalidRequest, RegistryUnavailable) as exc:
        raise EnvironmentFailed(f"{what}: {exc.message}") from None


def _abandon(acquiring: asyncio.Future[Lease]) -> None:
    """Stop acquiring an environment nobody waits for any more; a lease it returns anyway (it
    was done in the same step) is released at once, never left holding its environment."""

    def release(done: asyncio.Future[Lease]) -> None:
        if not done.cancelled() and done.exception() is None:
            done.result().release()

    acquiring.cancel()
    acquiring.add_done_callback(release)


def _environment_report(job: Job, venv: Lease | None) -> dict[str, object] | None:
    """The result's ``environment``: which one the job ran with and what preparing it took."""
    if venv is None:
        return None
    return {
        "id": venv.id,
        "packages": dict(venv.packages),
        "cached": venv.cached,
        "resolve_ms": job.request.resolve_ms,  # None: the default environment's
        "install_ms": venv.install_ms,
    }


class JobRunner:
    def __init__(
        self,
        registry: LanguageRegistry,
        paths: JobPaths,
        limits: RunLimits,
        job_path: str,
        sandbox: Sandbox | None = None,
        live: LiveOutput | None = None,
        packages: Packages | None = None,
    ):
        self.registry = registry
        self.packages = packages  # None: jobs run with the interpreter's own packages only
        self.live = live  # told of the output as it arrives (GET /jobs/{id}/stream follows it)
        self.paths = paths
        self.limits = limits
        self.job_path = job_path
        self.sandbox: Sandbox = sandbox or NoSandbox()
        # Removing a job's TMPDIR costs a few journaled-disk syscalls: one thread does it, off
        # the path between a job's exit and its final status.
        self._janitor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="janitor")
        self.sessions: SessionExecutor | None = None  # runs the jobs of sessions, when set

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        registry: LanguageRegistry,
        paths: JobPaths,
        live: LiveOutput | None = None,
        packages: Packages | None = None,
    ) -> JobRunner:
        """The runner this server's settings describe (the sandbox checked: fails closed), each
        language's interpreter tried in it once: one that cannot run there is unavailable."""
        executables = [lang.executable for lang in registry.languages.values() if lang.executable]
        sandbox = create_sandbox(settings, executables)
        limits = ResourceLimits.defaults(settings)
        try:
            env = build_environment(path=settings.job_path, home="/", tmpdir="/tmp", extra={})
            registry.check(lambda name, argv: try_command(sandbox, argv, limits, env, name))
        except BaseException:
            sandbox.close()
            raise
        return cls(
            registry,
            paths,
            RunLimits(
                output_bytes=settings.max_output_bytes,
                kill_grace_s=settings.kill_grace_s,
                scan=ScanLimits(settings.file_scan_max_entries, settings.file_scan_max_seconds),
                resources=limits,
            ),
            job_path=settings.job_path,
            sandbox=sandbox,
            live=live,
            packages=packages,
        )

    def warm_up(self) -> None:
        """Start the warm parents Python jobs will use (in the background): the plain
        interpreter's, or, with default packages, the default environment's once it is built."""
        python = self.registry.languages.get("python")
        if python is None or not python.executable or python.problem is not None:
            return
        packages, sandbox = self.packages, self.sandbox
        if packages is not None and packages.default and sandbox.venv_dir is not None:
            inside = f"{sandbox.venv_dir}/bin/python"  # every job that names none runs there
            packages.on_default_ready = lambda venv: sandbox.warm_up(inside, venv)
        else:
            sandbox.warm_up(python.executable)

    def _listener(self, job_id: str) -> OutputListener | None:
        live = self.live
        if live is None:
            return None
        return lambda stream, start, data: live.write(job_id, stream, start, data)

    def close(self) -> None:
        self._janitor.shutdown(wait=True)
        self.sandbox.close()
        GUARD.close()

    def open_working_directory(self, job: Job) -> tuple[int, Path]:
        """The job's directory, opened beneath the workspace root without following a symlink
        (made if missing), and its path."""
        try:
            if job.request.working_directory is None:
                path = self.paths.workspace(job.id)
                return self.paths.open_fresh(job.id, again=job.attempts > 1), path
            path = self.paths.named(job.request.working_directory)
            return self.paths.open_named(path), path
        except InvalidWorkingDirectory as exc:
            raise ExecutionError(f"working directory refused at start: {exc.message}") from exc
        except OSError as exc:
            raise ExecutionError(
                f"cannot prepare the job's directory: {exc.strerror or exc}"
            ) from exc

    def clean_up_after_crash(self, jobs: Sequence[Job]) -> dict[str, JobResult]:
        """Kill what the given jobs (running when the server died) left behind; blocking.

        Returns, for each job, the result to attach to it (``recover_after_crash`` does): what
        it had printed, as its output files hold it, stays its output."""
        tmpdirs = {str(self.paths.tmpdir(job.id)) for job in jobs}
        workdirs = {
            str(self.paths.workspace(j.id)) for j in jobs if j.request.working_directory is None
        }
        kill_leftovers(tmpdirs, workdirs)
        self.sandbox.recover([job.id for job in jobs])
        results: dict[str, JobResult] = {}
        for job in jobs:
            self._remove_scratch(self.paths.tmpdir(job.id), None)
            for language in self.registry.languages.values():
                self.paths.code_file(job.id, language.extension).unlink(missing_ok=True)
            results[job.id] = self.crashed_result(job)
        return results

    async def recover_after_crash(self, store: JobStore, jobs: Sequence[Job]) -> None:
        """``clean_up_after_crash`` off the loop, then each job's result attached in ``store``
        (the jobs are already final, without a result: ``store.fail_running``)."""
        results = await asyncio.to_thread(self.clean_up_after_crash, jobs)
        for job_id, result in results.items():
            try:
                await store.attach_result(job_id, result, None)
            except StoreError as exc:  # the job stays failed, without its output
                logger.warning(
                    "a crashed job's output not attached: %s", exc, extra={"job_id": job_id}
                )

    def crashed_result(self, job: Job) -> JobResult:
        """The result of a job that ran when the server died: the output its capture had
        written to disk. That is each stream's head (its first ``output_bytes // 2`` bytes,
        see ``output.StreamCapture``); the tail lived in the dead server's memory and is lost,
        so a stream that reached the head's size is marked truncated. A file longer than the
        normal cap (``output_bytes``: the setting was lowered since) is cut to it."""
        head_bytes = self.limits.output_bytes // 2
        stdout_bytes = _keep_output(self.paths.stdout(job.id), self.limits.output_bytes)
        stderr_bytes = _keep_output(self.paths.stderr(job.id), self.limits.output_bytes)
        named = job.request.working_directory
        workdir = str(self.paths.named(named) if named else self.paths.workspace(job.id))
        return JobResult(
            stdout_bytes=stdout_bytes,
            stderr_bytes=stderr_bytes,
            stdout_truncated=stdout_bytes >= head_bytes > 0,
            stderr_truncated=stderr_bytes >= head_bytes > 0,
            files_complete=False,
            files_note="not tracked: the server restarted while the job ran",
            working_directory=workdir,
            termination_reason=TerminationReason.SANDBOX_ERROR,  # not the code's doing
        )

    def _clean(self, tmpdir: Path | None, code_file: Path | None) -> None:
        """Remove the job's host TMPDIR and code file, if it had any, on the janitor thread (a
        sandboxed job with its code on the command line has neither: no thread hop then)."""
        if tmpdir is not None or code_file is not None:
            self._janitor.submit(self._remove_scratch, tmpdir, code_file)

    @staticmethod
    def _remove_scratch(tmpdir: Path | None, code_file: Path | None) -> None:
        try:
            if tmpdir is not None:
                tree.remove_path(tmpdir)
            if code_file is not None:
                code_file.unlink(missing_ok=True)
        except OSError as exc:  # the scratch directory is emptied at the next start anyway
            logger.warning("a job's scratch files not removed: %s", exc)

    async def run(self, job: Job, cancel: asyncio.Event, inputs: InputReader = no_inputs) -> Finish:
        if job.request.session_id is not None:  # it runs in a session's kernel
            if self.sessions is None:
                result = JobResult(termination_reason=TerminationReason.SANDBOX_ERROR)
                return Finish(JobStatus.FAILED, result, "this server runs no sessions", None)
            return await self.sessions.execute(job, cancel)
        try:
            return await self._run(job, cancel, inputs)
        except EnvironmentFailed as exc:  # its packages could not be installed: it never ran
            result = JobResult(termination_reason=TerminationReason.PACKAGES_ERROR)
            return Finish(JobStatus.FAILED, result, exc.message, None)
        except InterpreterError as exc:  # it never ran: not the code's doing
            result = JobResult(termination_reason=TerminationReason.SANDBOX_ERROR)
            return Finish(JobStatus.FAILED, result, exc.message, None)

    async def _run(self, job: Job, cancel: asyncio.Event, inputs: InputReader) -> Finish:
        language = self.registry.lookup(job.request.language)
        if not language.available:
            raise ExecutionError(f"the {language.name} interpreter is not available on this host")
        limits = job.request.limits or self.limits.resources
        if limits is None:
            raise ExecutionError("the job has no resource limits and the server sets none")
        venv: Lease | None = None
        if language.name == "python":
            venv = await self._venv(job, cancel)
            if venv is None and cancel.is_set():
                return CANCELLED_BEFORE_START
        try:
            return await self._in_directory(job, cancel, inputs, language, limits, venv)
        finally:
            if venv is not None:
                venv.release()

    async def _venv(self, job: Job, cancel: asyncio.Event) -> Lease | None:
        """The package environment the job asks for (or the default one), held for it; None
        without packages, or when ``cancel`` is set while it is built."""
        packages = self.packages
        if packages is None or packages.environments is None:
            return None
        request = job.request
        resolver = packages.resolver
        if request.lock and request.lock_python in (None, await resolver.python_tag()):
            requirements, pins = request.packages, request.lock
        elif request.lock:  # resolved by a replica on another Python: again, for this one
            here = await resolver.python_tag()
            resolution = await _resolve(resolver, request.packages, f"for this Python ({here})")
            requirements, pins = resolution.requirements, resolution.pins
        elif packages.default:
            resolution = await _resolve(
                resolver, packages.default, "the default packages (INTERPRETER_DEFAULT_PACKAGES)"
            )
            requirements, pins = resolution.requirements, resolution.pins
        else:
            return None
        acquiring = asyncio.ensure_future(packages.environments.acquire(requirements, pins))
        cancelled = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait({acquiring, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this task was cancelled: the lease, if any, is nobody's
            _abandon(acquiring)
            raise
        finally:
            cancelled.cancel()
        if not acquiring.done():  # the job was cancelled while it was built
            _abandon(acquiring)
            return None
        return acquiring.result()

    async def _in_directory(
        self,
        job: Job,
        cancel: asyncio.Event,
        inputs: InputReader,
        language: Language,
        limits: ResourceLimits,
        venv: Lease | None,
    ) -> Finish:
        if venv is not None:  # its python: the environment's, where the job sees it
            inside = self.sandbox.venv_dir or str(venv.path)
            language = dataclasses.replace(language, executable=f"{inside}/bin/python")
        fresh = job.request.working_directory is None
        # With a private /tmp (the sandbox's), there is no host TMPDIR to make and remove.
        tmpdir = None if self.sandbox.private_tmp else self.paths.tmpdir(job.id)
        argv = language.inline_argv(job.request.code)
        code_file = None
        code: tuple[str, bytes] | None = None
        if argv is None and self.sandbox.code_dir is not None:  # given to the sandbox as data
            inside = f"{self.sandbox.code_dir}/{job.id}{language.extension}"
            code = (inside, job.request.code.encode("utf-8"))
            argv = language.argv(inside)
        elif argv is None:
            code_file = self.paths.code_file(job.id, language.extension)
        cwd_fd, cwd = self.open_working_directory(job)
        try:
            # One job at a time in a directory, on the whole machine (a fresh one is free at
            # once, unless a caller named it while its job runs).
            timeout_s = job.request.timeout_s
            waited_s = await _take_directory(cwd_fd, timeout_s, cancel)
            if waited_s is None:
                return not_started(job, cancel)
            timeout_s -= waited_s
            with_inputs = job.request.input_file_count > 0
            if with_inputs:  # beneath its directory, never through a symlink (ExecutionError)
                await _write_inputs(cwd_fd, await inputs())
            try:
                if tmpdir is not None:
                    tmpdir.mkdir()
                if code_file is not None:
                    code_file.write_text(job.request.code, encoding="utf-8")
                    argv = language.argv(str(code_file))
            except (OSError, UnicodeError) as exc:
                self._clean(tmpdir, code_file)
                raise ExecutionError(f"cannot prepare the job's files: {exc}") from exc
            assert argv is not None
            setup = _Setup(
                argv, code, cwd_fd, cwd, fresh, with_inputs, tmpdir, code_file, timeout_s, venv
            )
            return await self._confined(job, language.name, limits, setup, cancel)
        finally:
            os.close(cwd_fd)

    async def _confined(
        self,
        job: Job,
        language: str,
        limits: ResourceLimits,
        setup: _Setup,
        cancel: asyncio.Event,
    ) -> Finish:
        """Confine the prepared job, run it and read how it ended."""
        cwd, tmpdir, code_file = setup.cwd, setup.tmpdir, setup.code_file
        venv_inside = None
        if setup.venv is not None:
            venv_inside = self.sandbox.venv_dir or str(setup.venv.path)
        env = build_environment(
            path=self.job_path,
            home=str(cwd),
            tmpdir="/tmp" if tmpdir is None else str(tmpdir),
            extra=job.request.environment,
            venv=venv_inside,
        )
        try:
            # Off the loop: a named directory's ownership walk and the mounts take a while.
            prepared = await asyncio.to_thread(
                self.sandbox.prepare,
                SandboxJob(
                    # a re-run (its worker was lost) gets cgroups of its own: the first run's may
                    # still be there, on this machine
                    job_id=job.id if job.attempts <= 1 else f"{job.id}.{job.attempts}",
                    language=language,
                    argv=setup.argv,
                    cwd=cwd,
                    env=env,
                    limits=limits,
                    cwd_fd=setup.cwd_fd,
                    cwd_shared=not setup.fresh,
                    cwd_inputs=setup.inputs,
                    code=setup.code,
                    venv=None if setup.venv is None else setup.venv.path,
                    # the plain interpreter or the default environment, never packages a caller
                    # chose (their code would run in a parent that starts other callers' jobs)
                    warm=language == "python" and not job.request.packages,
                ),
            )
        except ExecutionError:
            self._clean(tmpdir, code_file)
            raise
        spec = ProcessSpec(
            argv=prepared.argv,
            cwd=cwd,
            cwd_fd=setup.cwd_fd if prepared.view_fd is None else prepared.view_fd,
            spawn_cwd=prepared.spawn_cwd,
            env=prepared.env,
            timeout_s=setup.timeout_s,
            stdout_path=self.paths.stdout(job.id),
            stderr_path=self.paths.stderr(job.id),
            output_limit_bytes=self.limits.output_bytes,
            kill_grace_s=self.limits.kill_grace_s,
            track_files=job.request.capture_files,
            # input files are there before it starts: not files it created
            cwd_is_fresh=setup.fresh and not setup.inputs,
            scan_limits=self.limits.scan,
            confinement=prepared.confinement,
            workspace=prepared.workspace,
            pass_fds=prepared.pass_fds,
            stdin=None if job.request.stdin is None else job.request.stdin.encode("utf-8"),
            # without a confinement, nothing else takes the job down should this process die
            orphan_marks=None
            if prepared.confinement is not None
            else OrphanMarks(
                tmpdir=None if tmpdir is None else str(tmpdir),
                workdir=str(cwd) if setup.fresh else None,
            ),
            on_output=self._listener(job.id),
            warm=prepared.warm,
        )
        try:
            if cancel.is_set():
                return CANCELLED_BEFORE_START
            try:
                outcome = await run_process(spec, cancel)
            finally:
                if self.live is not None:
                    self.live.forget(job.id)
            not_kept = await _collect(self.sandbox, prepared)
        finally:
            self.sandbox.release(prepared)
            self._clean(tmpdir, code_file)
        ending = read_ending(job, outcome, limits, self.sandbox, spec.stderr_path)
        if not_kept is not None:  # what it wrote would have passed its limit once on the host
            ending = Ending(
                JobStatus.FAILED,
                TerminationReason.WORKSPACE_LIMIT,
                not_kept,
                ending.exit_code,
                ending.signal,
            )
        result = JobResult(
            exit_code=ending.exit_code,
            signal=ending.signal,
            stdout_bytes=outcome.stdout.total_bytes,
            stderr_bytes=outcome.stderr.total_bytes,
            stdout_truncated=outcome.stdout.truncated,
            stderr_truncated=outcome.stderr.truncated,
            files_created=outcome.files.created,
            files_modified=outcome.files.modified,
            files_deleted=outcome.files.deleted,
            files_complete=outcome.files.complete,
            files_note=outcome.files.note,
            resource_usage=usage_of(outcome),
            environment_snapshot=redact(env),
            working_directory=str(cwd),
            termination_reason=ending.reason,
            environment=_environment_report(job, setup.venv),
        )
        return Finish(ending.status, result, ending.error, round(outcome.duration_ms, 3))
