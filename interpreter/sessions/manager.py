"""The sessions of one server: each a sandboxed kernel that keeps its state between executions.

A session lives in the process that created it (the embedded server), for as long as it is used:
it ends when deleted, after ``idle_timeout_s`` without an execution, ``max_lifetime_s`` after it
began, and with the server (nothing of it survives a restart). Each execution is a job
(``JobRequest.session_id``): the queue runs it like any other, and the runner hands it here
(``execute``), where it waits for the session's previous execution, then runs in the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from interpreter import tree
from interpreter.config import Settings
from interpreter.environment import build_environment
from interpreter.errors import (
    ExecutionError,
    InterpreterError,
    KernelExited,
    ServiceUnavailable,
    SessionNotFound,
    SessionsFull,
    SessionStartRefused,
    SessionsUnsupported,
    SessionUnavailable,
    TooManySessions,
)
from interpreter.job import Job, JobRequest, JobResult, JobStatus, TerminationReason, utcnow
from interpreter.jobfiles import FileSource, LiveFiles
from interpreter.limits import ResourceLimits
from interpreter.packages import Lease, Packages
from interpreter.process.spec import OutputListener
from interpreter.running.ending import CANCELLED_BEFORE_START, Finish, read_ending
from interpreter.running.live import LiveOutput
from interpreter.sandbox import mounts
from interpreter.sandbox.base import Sandbox
from interpreter.sessions.cell import Cell
from interpreter.sessions.kernel import INTERRUPT_GRACE_S, INTERRUPTS, CellEnd, Kernel, Launch
from interpreter.workspace import JobPaths

logger = logging.getLogger(__name__)

MAX_WAITING = 4  # executions that may wait for a session's running one; more: 409
ATTACHED = (
    "a websocket client speaks to this session's kernel (/api/kernels/{id}/channels); "
    "its executions are refused until it leaves"
)
REAP_EVERY_S = 1.0
SOCKET_ROOT_BYTES = 64 * 2**20  # every kernel's socket directory on the machine: sockets, a file
LIFETIME_SLACK_S = 60.0  # the process's own bound, beyond the reaper's
# The kernel's scratch (IPython's profile, matplotlib's cache) in its private /tmp; the inline
# backend turns plt.show() and open figures into display outputs.
KERNEL_ENV = {
    "IPYTHONDIR": "/tmp/.ipython",
    "MPLCONFIGDIR": "/tmp/.matplotlib",
    "XDG_CACHE_HOME": "/tmp/.cache",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}


# The kernel each language's sessions run; a shell session is a bash (bash_kernel: a bash behind
# a pseudo-terminal, its commands' output as one stream) whose directory and exported variables
# carry over.
KERNEL_MODULES = {"python": "ipykernel_launcher", "shell": "bash_kernel"}
BASH_KERNEL = "bash_kernel>=0.9"


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """A new session as validated by the API."""

    language: str
    packages: tuple[str, ...]
    limits: ResourceLimits
    environment: dict[str, str]
    idle_timeout_s: float
    max_lifetime_s: float


@dataclass(eq=False)
class Session:
    id: str
    owner: str | None
    request: SessionRequest
    directory: Path
    created_at: datetime = field(default_factory=utcnow)
    started: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    last_activity_at: datetime = field(default_factory=utcnow)
    status: str = "starting"  # starting, idle, busy, dead
    error: str | None = None  # why it is dead
    executions: int = 0
    starts: int = 0  # kernels started (a restart starts one more)
    kernel: Kernel | None = None
    lease: Lease | None = None
    environment: dict[str, Any] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    creating: bool = False  # create() runs: it cleans up itself if the session ends meanwhile
    attached: int = 0  # websocket clients speaking to its kernel (Kernel Gateway's channels)
    directory_fd: int | None = None

    @property
    def expires_at(self) -> datetime:
        return self.created_at + timedelta(seconds=self.request.max_lifetime_s)

    def touch(self) -> None:
        self.last_activity = time.monotonic()
        self.last_activity_at = utcnow()


def snapshot(session: Session) -> dict[str, Any]:
    """What GET /sessions/{id} shows of ``session``, as JSON values (a worker stores it for
    the API replicas in the scale-out)."""
    env = session.environment
    limits = session.request.limits.to_dict()
    return {
        "session_id": session.id,
        "status": session.status,
        "language": session.request.language,
        "created_at": session.created_at.isoformat(),
        "last_activity_at": session.last_activity_at.isoformat(),
        "expires_at": session.expires_at.isoformat(),
        "idle_timeout_s": session.request.idle_timeout_s,
        "max_lifetime_s": session.request.max_lifetime_s,
        "executions": session.executions,
        "working_directory": str(session.directory),
        "environment": {"id": env["id"], "packages": env["packages"]} if env else None,
        "limits": {k: v for k, v in limits.items() if v is not None},
        "error": session.error,
        "starts": session.starts,
    }


def kernels_dir(data_dir: Path, run_dir: Path) -> Path:
    """The directory of a server's kernels' socket directories: one per data directory, under
    the machine's ``<run dir>/kernels`` (short paths: an ipc path is at most 107 bytes)."""
    instance = hashlib.sha256(os.fsencode(os.path.realpath(data_dir))).hexdigest()[:12]
    return run_dir / "kernels" / instance


def _socket_root(settings: Settings) -> Path:
    """Where kernels' socket directories go, searchable by the kernels' uids."""
    here = kernels_dir(settings.data_dir, settings.sandbox_run_dir)
    try:
        here.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(here.parent, 0o711)
        return here
    except OSError:  # not root, and no sandbox: a fresh directory of the server's own
        return Path(tempfile.mkdtemp(prefix="interpreter-kernels-"))


class Sessions:
    def __init__(
        self,
        settings: Settings,
        sandbox: Sandbox,
        paths: JobPaths,
        packages: Packages | None,
        live: LiveOutput | None,
    ) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self.paths = paths
        self.packages = packages
        self.live = live
        self.socket_root = _socket_root(settings)
        self._sessions: dict[str, Session] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._held: int | None = None  # the socket root, locked while this server lives
        self._interrupts: set[asyncio.Task[None]] = set()
        # Told when a session's state changed (an execution ended, its kernel died): a worker
        # writes it for the API replicas at once (host.py)
        self.on_change: Callable[[Session], None] | None = None

    # -- the server's life -----------------------------------------------------------------
    def start(self) -> None:
        """Remove what sessions of a previous server left, and start reaping."""
        shared = self.socket_root.parent
        if self.sandbox.name != "none" and os.geteuid() == 0 and shared.is_dir():
            self._mount_shared(shared)
        shutil.rmtree(self.socket_root, ignore_errors=True)
        self.socket_root.mkdir(mode=0o711, parents=True, exist_ok=True)
        # Held while this server lives: a server that starts later removes the directories of
        # the servers that hold theirs no more (killed: they left their sockets behind)
        self._held = os.open(self.socket_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self._held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if shared == self.settings.sandbox_run_dir / "kernels":  # never a temporary directory's
            self._sweep_dead(shared)
        root = self.paths.workspace_root
        with contextlib.suppress(OSError):
            for entry in root.iterdir():
                if entry.name.startswith("session-"):
                    tree.remove_path(entry)
        self._reaper = asyncio.create_task(self._reap(), name="session-reaper")

    def _sweep_dead(self, shared: Path) -> None:
        with contextlib.suppress(OSError):
            for entry in shared.iterdir():
                if entry == self.socket_root or not entry.is_dir() or entry.is_symlink():
                    continue
                try:
                    fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    shutil.rmtree(entry, ignore_errors=True)
                except BlockingIOError:
                    continue  # its server lives
                finally:
                    os.close(fd)

    @staticmethod
    def _mount_shared(shared: Path) -> None:
        """What a kernel can write in its socket directory while it starts is capped: one
        small tmpfs for the machine's kernels, mounted by the first server (under a lock every
        server takes) and left for the others, like the run directory it is in. A session's
        own volume and /tmp hold its disk and memory; this directory is the server's."""
        lock = os.open(f"{shared}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if mounts.is_mount_point(shared):
                return
            options = f"size={SOCKET_ROOT_BYTES},nr_inodes=65536,mode=0711"
            flags = mounts.MS_NOSUID | mounts.MS_NODEV
            mounts.mount("interpreter-kernels", str(shared), "tmpfs", flags, options)
        except OSError as exc:
            logger.warning("kernel sockets not on a tmpfs of their own: %s", exc)
        finally:
            os.close(lock)

    async def close(self) -> None:
        """End every session: nothing of them is left running."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for task in list(self._interrupts):  # resent interrupts: their kernels end here
            task.cancel()
        await asyncio.gather(
            *(self._end(s, "the server stopped") for s in list(self._sessions.values()))
        )
        shutil.rmtree(self.socket_root, ignore_errors=True)
        if self._held is not None:
            os.close(self._held)
            self._held = None

    # -- what the API asks -----------------------------------------------------------------
    def all(self) -> list[Session]:
        return list(self._sessions.values())

    def owned(self, owner: str | None) -> list[Session]:
        return [s for s in self._sessions.values() if s.owner == owner]

    async def mine(self, owner: str | None) -> list[dict[str, Any]]:
        return [snapshot(s) for s in self.owned(owner)]

    async def show(self, session_id: str, owner: str | None) -> dict[str, Any]:
        return snapshot(self.get(session_id, owner))

    def get(self, session_id: str, owner: str | None) -> Session:
        session = self._sessions.get(session_id)
        if session is None or session.owner != owner:
            raise SessionNotFound(session_id)
        return session

    async def admit(self, session_id: str, owner: str | None) -> str:
        """The language of the session an execution is submitted to, when it can take one."""
        session = self.get(session_id, owner)
        if session.status == "dead":
            raise SessionUnavailable(
                f"the session's kernel is dead ({session.error}); restart or delete it"
            )
        if session.waiting > MAX_WAITING:
            raise SessionUnavailable(
                f"{session.waiting} executions already wait in this session; retry later"
            )
        if session.attached:
            raise SessionUnavailable(ATTACHED)
        return session.request.language

    async def create(
        self, owner: str | None, request: SessionRequest, session_id: str | None = None
    ) -> Session:
        if self._closed:
            raise ServiceUnavailable("the server is shutting down and starts no session")
        if self.packages is None or self.packages.environments is None:
            raise SessionsUnsupported(
                "sessions need a Python interpreter and uv for the kernel's packages"
            )
        mine = sum(1 for s in self._sessions.values() if s.owner == owner)
        if mine >= self.settings.max_sessions_per_key:
            raise TooManySessions(
                f"this API key holds {mine} sessions, the most it may "
                "(INTERPRETER_MAX_SESSIONS_PER_KEY); delete one first",
                retry_after_s=5.0,
            )
        if len(self._sessions) >= self.settings.max_sessions:
            raise SessionsFull(
                f"the server holds {len(self._sessions)} sessions, the most it may "
                "(INTERPRETER_MAX_SESSIONS); retry later",
                retry_after_s=5.0,
            )
        session_id = session_id or secrets.token_hex(16)
        session = Session(session_id, owner, request, self.paths.workspace(f"session-{session_id}"))
        self._sessions[session_id] = session  # counted from now: caps hold while it starts
        session.creating = True
        try:
            await self._environment(session)
            self._still_there(session)
            # its lifetime counts from here: installing its packages took none of it
            session.started = time.monotonic()
            session.created_at = utcnow()
            session.directory_fd = self.paths.open_fresh(f"session-{session_id}", again=False)
            await self._start_kernel(session)
            self._still_there(session)
            session.touch()
        except ExecutionError as exc:  # the kernel's words: no host path, its last line only
            await self._end(session, "it could not start", force=True)
            if isinstance(exc, KernelExited) and (request.packages or request.environment):
                raise SessionStartRefused(
                    "the session could not start with its packages or environment variables: "
                    f"{exc.message}"
                ) from None
            raise ServiceUnavailable(f"the session could not start: {exc.message}") from None
        except BaseException:
            await self._end(session, "it could not start", force=True)
            raise
        finally:
            session.creating = False
        return session

    def _still_there(self, session: Session) -> None:
        """Raise when the session ended (deleted, reaped, the server stopping) while it
        started: its start then cleans up what it holds."""
        if self._sessions.get(session.id) is not session:
            raise SessionNotFound(session.id)

    async def _environment(self, session: Session) -> None:
        assert self.packages is not None and self.packages.environments is not None
        resolver = self.packages.resolver
        if session.request.language == "python":
            wanted = (
                self.settings.session_kernel_requirement,
                *self.packages.default,
                *session.request.packages,
            )
        else:
            wanted = (BASH_KERNEL,)
        started = time.perf_counter()
        resolution = await resolver.resolve(wanted)
        resolve_ms = (time.perf_counter() - started) * 1000
        lease = await self.packages.environments.acquire(resolution.requirements, resolution.pins)
        session.lease = lease
        session.environment = {
            "id": lease.id,
            "packages": dict(lease.packages),
            "cached": lease.cached,
            "resolve_ms": round(resolve_ms, 3),
            "install_ms": lease.install_ms,
        }

    async def _start_kernel(self, session: Session) -> None:
        assert session.lease is not None and session.directory_fd is not None
        session.starts += 1
        venv_inside = self.sandbox.venv_dir or str(session.lease.path)
        scratch = self.paths.tmpdir(f"session-{session.id}")
        tmp = "/tmp" if self.sandbox.private_tmp else str(scratch)
        if not self.sandbox.private_tmp:
            scratch.mkdir(parents=True, exist_ok=True)
        kernel_env = {k: v.replace("/tmp", tmp, 1) for k, v in KERNEL_ENV.items()}
        env = build_environment(
            path=self.settings.job_path,
            home=str(session.directory),
            tmpdir=tmp,
            extra={**session.request.environment, **kernel_env},
            venv=venv_inside,
        )
        token = secrets.token_hex(6)
        kernel = Kernel(
            self.sandbox, self.socket_root / token, self.paths.scratch_root / f"kernel-{token}"
        )
        left_s = session.request.max_lifetime_s - (time.monotonic() - session.started)
        launch = Launch(
            name=f"session-{session.id}-{session.starts}",
            python=f"{venv_inside}/bin/python",
            module=KERNEL_MODULES[session.request.language],
            cwd=session.directory,
            cwd_fd=session.directory_fd,
            env=env,
            limits=session.request.limits,
            venv=session.lease.path,
            lifetime_s=max(left_s, 1.0) + LIFETIME_SLACK_S,
            kill_grace_s=self.settings.kill_grace_s,
        )
        session.kernel = kernel
        session.status = "starting"
        try:
            await kernel.start(launch)
        except OSError as exc:
            raise ExecutionError(f"the kernel could not start: {exc.strerror or exc}") from exc
        session.status = "idle"
        session.error = None
        kernel.ended.add_done_callback(lambda _: self._kernel_ended(session, kernel))

    def _kernel_ended(self, session: Session, kernel: Kernel) -> None:
        """A kernel that ended while nobody stopped it (between executions): dead."""
        if session.kernel is kernel and session.status == "idle" and kernel.client is not None:
            session.status = "dead"
            session.error = self._death(session, kernel)[1]
            logger.warning("session kernel died", extra={"session_id": session.id})
            self._changed(session)

    def _death(self, session: Session, kernel: Kernel) -> tuple[TerminationReason, str]:
        """Why ``kernel`` (ended) died, as a job's process would say it."""
        task = kernel.ended
        if task.cancelled() or task.exception() is not None:
            return TerminationReason.SANDBOX_ERROR, "the kernel ended"
        probe = Job(
            id=session.id,
            request=JobRequest(
                code="", language="python", timeout_s=session.request.max_lifetime_s
            ),
        )
        ending = read_ending(
            probe,
            task.result(),
            session.request.limits,
            self.sandbox,
            kernel.log_dir / "kernel.stderr",
        )
        reason = ending.reason
        if reason in (TerminationReason.EXIT, TerminationReason.TIMEOUT):
            reason = TerminationReason.SIGNAL if ending.signal else TerminationReason.EXIT
        return reason, f"the kernel died: {ending.error or 'it exited'}"

    @contextlib.asynccontextmanager
    async def attached(self, session: Session) -> AsyncIterator[Kernel]:
        """The session's kernel, for a client that speaks to it directly (a websocket). While
        one is attached, the session's own executions are refused (they would read the same
        messages); a restart or the session's end stops the kernel, which ends the client's
        connection."""
        async with session.lock:  # after the running execution, if any
            kernel = session.kernel
            if session.status == "dead" or kernel is None or kernel.client is None:
                raise SessionUnavailable(
                    f"the session's kernel is dead ({session.error}); restart or delete it"
                )
            session.attached += 1
        session.touch()
        try:
            yield kernel
        finally:
            session.attached -= 1
            session.touch()

    def files(self, session_id: str) -> FileSource | None:
        """The files of the session's directory as its kernel sees them now; None when the
        session is not running here."""
        session = self._sessions.get(session_id)
        kernel = None if session is None else session.kernel
        if kernel is None:
            return None
        scan = self.settings.file_scan_max_entries, self.settings.file_scan_max_seconds
        return LiveFiles(kernel.with_root, *scan)

    async def delete(self, session_id: str, owner: str | None) -> None:
        await self._end(self.get(session_id, owner), "deleted")

    async def interrupt(self, session_id: str, owner: str | None) -> Session:
        """Interrupt the running cell: the request is sent again (up to three times, a second
        apart) while that same cell still runs, as one can be lost on a loaded machine."""
        session = self.get(session_id, owner)
        kernel = session.kernel
        if kernel is None:
            return session
        kernel.interrupt()  # a websocket client's cell too (its cells leave the status idle)
        if session.status != "busy":
            return session
        cell = session.executions

        async def again() -> None:
            for _ in range(INTERRUPTS - 1):
                await asyncio.sleep(INTERRUPT_GRACE_S / INTERRUPTS)
                running = session.status == "busy" and session.executions == cell
                if not running or session.kernel is not kernel:
                    return
                kernel.interrupt()

        task = asyncio.create_task(again(), name=f"interrupt {session.id}")
        self._interrupts.add(task)
        task.add_done_callback(self._interrupts.discard)
        return session

    async def restart(self, session_id: str, owner: str | None) -> Session:
        """A fresh kernel in the same directory, after the running execution (if any) was
        interrupted and ended."""
        session = self.get(session_id, owner)
        if session.kernel is not None:
            session.kernel.interrupt()
        async with session.lock:
            await self._restart(session)
        return session

    async def _restart(self, session: Session) -> None:
        kernel, session.kernel = session.kernel, None
        if kernel is not None:
            await kernel.stop()
            self._forget_kernel(kernel)
        try:
            await self._start_kernel(session)
        except InterpreterError as exc:
            session.status = "dead"
            session.error = f"the kernel could not start again: {exc.message}"

    async def _end(self, session: Session, why: str, force: bool = False) -> None:
        """End the session: its kernel killed, its environment let go, its files removed. A
        session still starting is only taken off the list: its start does the rest (``force``)
        when it sees that."""
        listed = self._sessions.get(session.id) is session
        if listed:
            del self._sessions[session.id]
            logger.info("session ended: %s", why, extra={"session_id": session.id})
            session.status = "dead"
            session.error = f"the session ended: {why}"
        if session.creating and not force:
            return
        if not listed and not force:
            return
        kernel, session.kernel = session.kernel, None
        if kernel is not None:
            await kernel.stop()
            self._forget_kernel(kernel)
        if session.lease is not None:
            session.lease.release()
            session.lease = None
        if session.directory_fd is not None:
            os.close(session.directory_fd)
            session.directory_fd = None
        name = f"session-{session.id}"
        await asyncio.to_thread(self._remove_files, name)

    def _remove_files(self, name: str) -> None:
        with contextlib.suppress(OSError):
            self.paths.remove_workspace(name)
        with contextlib.suppress(OSError):
            tree.remove_path(self.paths.tmpdir(name))

    @staticmethod
    def _forget_kernel(kernel: Kernel) -> None:
        shutil.rmtree(kernel.socket_dir, ignore_errors=True)
        shutil.rmtree(kernel.log_dir, ignore_errors=True)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            try:
                await self._reap_once()
            except Exception:  # one session's failure stops no reaping of the others
                logger.exception("session reaping failed")

    async def _reap_once(self) -> None:
        now = time.monotonic()
        for session in list(self._sessions.values()):
            request = session.request
            if session.creating:  # its lifetime begins once it is ready
                continue
            if now - session.started > request.max_lifetime_s:
                await self._end(session, f"its lifetime ({request.max_lifetime_s:g} s) passed")
            elif (
                session.status in ("idle", "dead")
                and not session.waiting
                and not session.attached
                and now - session.last_activity > request.idle_timeout_s
            ):
                await self._end(session, f"idle for {request.idle_timeout_s:g} s")

    # -- executions (the runner's) ---------------------------------------------------------
    def _listener(self, job_id: str) -> OutputListener | None:
        live = self.live
        if live is None:
            return None
        return lambda stream, start, data: live.write(job_id, stream, start, data)

    async def execute(self, job: Job, cancel: asyncio.Event) -> Finish:
        session_id = job.request.session_id
        assert session_id is not None
        session = self._sessions.get(session_id)
        if session is None or session.owner != job.owner:
            return _failed(f"the session {session_id} has ended", TerminationReason.SANDBOX_ERROR)
        loop = asyncio.get_running_loop()
        queued = loop.time()
        session.waiting += 1
        try:
            taken = await _acquire(session.lock, cancel, job.request.timeout_s)
        finally:
            session.waiting -= 1
        if taken is None:
            if cancel.is_set():
                return CANCELLED_BEFORE_START
            return Finish(
                JobStatus.TIMEOUT,
                JobResult(termination_reason=TerminationReason.TIMEOUT),
                f"timed out after {job.request.timeout_s:g} s waiting for the session's "
                "earlier executions",
                None,
            )
        try:
            timeout_s = job.request.timeout_s - (loop.time() - queued)
            return await self._execute(session, job, cancel, timeout_s)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # this job's own cancellation
                raise
            # a cancellation from below (a channel closed under a read): the session ended
            return _failed(f"the session ended: {session.error}", TerminationReason.SANDBOX_ERROR)
        finally:
            session.lock.release()
            self._changed(session)

    def _changed(self, session: Session) -> None:
        if self.on_change is not None:
            self.on_change(session)

    async def _execute(
        self, session: Session, job: Job, cancel: asyncio.Event, timeout_s: float
    ) -> Finish:
        kernel = session.kernel
        if self._sessions.get(session.id) is not session:  # deleted, reaped: before it ran
            why = (session.error or "").removeprefix("the session ended: ")
            return _failed(
                f"the session ended before the cell ran: {why}", TerminationReason.SANDBOX_ERROR
            )
        if session.status == "dead" or kernel is None or kernel.client is None:
            return _failed(
                f"the session's kernel is dead ({session.error}); restart or delete the session",
                TerminationReason.SANDBOX_ERROR,
            )
        if session.attached:
            return _failed(ATTACHED, TerminationReason.SANDBOX_ERROR)
        if cancel.is_set():
            return CANCELLED_BEFORE_START
        cell = Cell(
            self.paths.stdout(job.id),
            self.paths.stderr(job.id),
            self.settings.max_output_bytes,
            self._listener(job.id),
            total_bytes=self.settings.max_output_bytes,
            bundle_bytes=self.settings.max_output_bytes // 2,
        )
        session.status = "busy"
        session.touch()
        started = time.perf_counter()
        try:
            end, stopped_by = await kernel.execute(job.request.code, timeout_s, cancel, cell)
        finally:
            cell.finish()
            if self.live is not None:
                self.live.forget(job.id)
            session.executions += 1
            session.touch()
            if session.status == "busy":
                session.status = "idle"
        duration_ms = (time.perf_counter() - started) * 1000
        status, reason, message = await self._ending(session, job, end, stopped_by)
        stdout, stderr = cell.captures["stdout"], cell.captures["stderr"]
        exit_code = None
        if session.request.language == "shell" and end.how in ("ok", "error"):
            # bash_kernel's error is the last command's exit status
            value = (cell.error_info or {}).get("value", "0")
            exit_code = int(value) if value.isdigit() else None
        result = JobResult(
            exit_code=exit_code,
            stdout_bytes=stdout.total_bytes,
            stderr_bytes=stderr.total_bytes,
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            files_complete=False,
            files_note="not tracked per execution: GET /jobs/{id}/files lists the session's "
            "directory as it is while the session runs",
            working_directory=str(session.directory),
            termination_reason=reason,
            environment=session.environment,
            outputs=tuple(cell.outputs),
            outputs_truncated=cell.outputs_truncated,
            error=cell.error_info,
        )
        return Finish(status, result, message, round(duration_ms, 3))

    async def _ending(
        self, session: Session, job: Job, end: CellEnd, stopped_by: str | None
    ) -> tuple[JobStatus, TerminationReason, str | None]:
        timeout = f"timed out after {job.request.timeout_s:g} s"
        why = "cancelled" if stopped_by == "cancelled" else timeout
        status = JobStatus.CANCELLED if stopped_by == "cancelled" else JobStatus.TIMEOUT
        reason = (
            TerminationReason.CANCELLED if stopped_by == "cancelled" else TerminationReason.TIMEOUT
        )
        if self._sessions.get(session.id) is not session or end.how == "ended":
            # deleted, reaped or the server stopping while the cell ran
            why_ended = (session.error or "").removeprefix("the session ended: ")
            ended = f"the session ended while the cell ran: {why_ended}"
            return JobStatus.FAILED, TerminationReason.SANDBOX_ERROR, ended
        match end.how:
            case "ok":
                return JobStatus.COMPLETED, TerminationReason.EXIT, None
            case "error" if session.request.language == "shell":
                return JobStatus.FAILED, TerminationReason.EXIT, "the last command failed"
            case "error":
                return JobStatus.FAILED, TerminationReason.EXIT, "the code raised an exception"
            case "interrupted":
                kept = "the cell was interrupted; the session keeps its state"
                return status, reason, f"{why}: {kept}"
            case "killed":
                await self._restart(session)
                return (
                    status,
                    reason,
                    f"{why}: the cell did not stop within {INTERRUPT_GRACE_S:g} s of an "
                    "interrupt, so the kernel was restarted; its variables are gone",
                )
        if session.kernel is None:  # stopped by a restart meanwhile
            return JobStatus.FAILED, TerminationReason.SANDBOX_ERROR, "the kernel was restarted"
        died, session.error = self._death(session, session.kernel)
        session.status = "dead"
        return JobStatus.FAILED, died, session.error


def _failed(message: str, reason: TerminationReason) -> Finish:
    return Finish(JobStatus.FAILED, JobResult(termination_reason=reason), message, None)


async def _acquire(lock: asyncio.Lock, cancel: asyncio.Event, timeout_s: float) -> bool | None:
    """Take ``lock``, unless ``cancel`` is set or ``timeout_s`` passes first (None)."""
    taking = asyncio.ensure_future(lock.acquire())
    cancelled = asyncio.ensure_future(cancel.wait())
    try:
        done, _ = await asyncio.wait(
            {taking, cancelled}, timeout=max(timeout_s, 0), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        cancelled.cancel()
    if taking in done and not cancel.is_set():
        return True
    if taking in done:
        lock.release()
    else:
        taking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await taking
        if taking.done() and not taking.cancelled():  # it got the lock as it was cancelled
            lock.release()
    return None
