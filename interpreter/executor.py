"""Run one process to completion and describe what it did.

The executor knows nothing about jobs, stores or HTTP: it takes a ``ProcessSpec`` (argv, working
directory, environment, limits, where to write output) and returns a ``ProcessOutcome``.
The sandbox (a later layer) wraps ``argv``; the dispatcher turns outcomes into job results.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import psutil

from interpreter import filetrack
from interpreter.errors import ExecutionError
from interpreter.filetrack import ScanLimits
from interpreter.output import StreamCapture

logger = logging.getLogger(__name__)

_PIPE_SIZE_BYTES = 1 << 20
_LEADER_SAMPLES_S = (0.001, 0.001, 0.002, 0.004, 0.008)
_SAMPLE_EVERY_S = 0.1
_DRAIN_AFTER_EXIT_S = 0.5
_SIGKILL_PATIENCE_S = 5.0
_MAX_TRACKED_DESCENDANTS = 4096

Termination = Literal["exit", "timeout", "cancelled"]

__all__ = [
    "CapturedStream",
    "FileChanges",
    "ProcessOutcome",
    "ProcessSpec",
    "ResourceUsage",
    "ScanLimits",
    "run_process",
]


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    timeout_s: float
    stdout_path: Path
    stderr_path: Path
    output_limit_bytes: int = 10 * 1024 * 1024
    kill_grace_s: float = 1.0
    track_files: bool = True
    cwd_is_fresh: bool = False  # the directory was just created empty: skip the "before" scan
    scan_limits: ScanLimits = field(default_factory=ScanLimits)


@dataclass(frozen=True, slots=True)
class CapturedStream:
    """One output stream as kept on disk at ``path`` (head + marker + tail when truncated)."""

    path: Path
    total_bytes: int  # everything the process wrote
    truncated: bool


@dataclass(frozen=True, slots=True)
class FileChanges:
    created: tuple[str, ...] = ()  # sorted absolute paths
    modified: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    complete: bool = True  # False when a scan hit its entry or time bound
    note: str | None = None  # why it is incomplete


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    pid: int
    cpu_user_s: float
    cpu_system_s: float
    cpu_percent_avg: float  # (user + system) / wall * 100
    peak_rss_bytes: int  # largest process of the tree: wait4's rusage, or sampled (see _Child)
    peak_vms_bytes: int | None  # sampled while running; None if it ended before a sample


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    termination: Termination
    exit_code: int | None  # None when killed by a signal
    signal: int | None  # the signal that ended it, if any
    stdout: CapturedStream
    stderr: CapturedStream
    files: FileChanges
    usage: ResourceUsage
    started_at: datetime  # aware UTC
    finished_at: datetime
    duration_ms: float


async def run_process(spec: ProcessSpec, cancel: asyncio.Event | None = None) -> ProcessOutcome:
    """Run ``spec`` to completion, timeout or cancellation (set ``cancel``)."""
    before = filetrack.EMPTY
    if spec.track_files and not spec.cwd_is_fresh:
        before = await filetrack.scan_async(spec.cwd, spec.scan_limits)
    child = _Child.spawn(spec, asyncio.get_running_loop())
    try:
        termination = await child.supervise(spec.timeout_s, spec.kill_grace_s, cancel)
        status, rusage = await child.reap()
        await child.drain(_DRAIN_AFTER_EXIT_S)
    except BaseException:
        child.abandon()
        raise
    after = filetrack.EMPTY
    if spec.track_files:
        after = await filetrack.scan_async(spec.cwd, spec.scan_limits)
    changes = filetrack.diff(before, after)
    code = os.waitstatus_to_exitcode(status)
    exit_mono = child.exit_mono if child.exit_mono is not None else time.monotonic()
    wall_s = exit_mono - child.started_mono
    cpu_s = rusage.ru_utime + rusage.ru_stime
    outcome = ProcessOutcome(
        termination=termination,
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        stdout=_captured(child.stdout),
        stderr=_captured(child.stderr),
        files=FileChanges(
            created=changes.created,
            modified=changes.modified,
            deleted=changes.deleted,
            complete=changes.complete,
            note=changes.note,
        ),
        usage=ResourceUsage(
            pid=child.pid,
            cpu_user_s=rusage.ru_utime,
            cpu_system_s=rusage.ru_stime,
            cpu_percent_avg=cpu_s / wall_s * 100 if wall_s > 0 else 0.0,
            peak_rss_bytes=child.peak_rss_bytes(rusage.ru_maxrss * 1024),
            peak_vms_bytes=child.peak_vms_bytes,
        ),
        started_at=child.started_at,
        finished_at=child.finished_at or datetime.now(UTC),
        duration_ms=wall_s * 1000,
    )
    logger.debug(
        "process %d ended: %s exit_code=%s signal=%s duration_ms=%.1f",
        child.pid,
        termination,
        outcome.exit_code,
        outcome.signal,
        outcome.duration_ms,
    )
    return outcome


def _captured(capture: StreamCapture) -> CapturedStream:
    return CapturedStream(capture.path, capture.total_bytes, capture.truncated)


class _Child:
    """One spawned process group: its pipes, its pidfd and what we learn while it runs.

    The leader is reaped only by ``reap`` (or ``abandon``); until then its pid, and so its
    process group id, cannot be reused, which makes every ``killpg`` before it safe.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        popen: subprocess.Popen[bytes],
        pidfd: int,
        outputs: tuple[tuple[StreamCapture, int], tuple[StreamCapture, int]],
        started: tuple[float, datetime],
    ) -> None:
        self.started_mono, self.started_at = started  # taken before the spawn
        self.exit_mono: float | None = None
        self.finished_at: datetime | None = None
        self.loop = loop
        self.popen = popen
        self.pid = popen.pid
        self.pidfd: int | None = pidfd
        self.reaped = False
        self.peak_vms_bytes: int | None = None
        self.peak_hwm_bytes: int | None = None
        self.server_hwm_bytes = _status_bytes("self").get("VmHWM", 0)
        self.exited: asyncio.Future[None] = loop.create_future()
        self._descendants: dict[int, psutil.Process] = {}
        (self.stdout, stdout_fd), (self.stderr, stderr_fd) = outputs
        loop.add_reader(pidfd, self._on_exit)
        self.stdout.attach(loop, stdout_fd)
        self.stderr.attach(loop, stderr_fd)

    @classmethod
    def spawn(cls, spec: ProcessSpec, loop: asyncio.AbstractEventLoop) -> _Child:
        """Start ``spec.argv`` in its own session; ``ExecutionError`` if it cannot start."""
        if not spec.argv:
            raise ExecutionError("cannot start a process: argv is empty")
        with contextlib.ExitStack() as undo:
            try:
                stdout = StreamCapture(spec.stdout_path, spec.output_limit_bytes)
                undo.callback(stdout.close)
                stderr = StreamCapture(spec.stderr_path, spec.output_limit_bytes)
                undo.callback(stderr.close)
            except OSError as exc:
                message = f"cannot open output file {exc.filename}: {exc.strerror}"
                raise ExecutionError(message) from exc
            write_ends: list[int] = []
            try:
                stdout_fd, stdout_w = os.pipe()
                undo.callback(os.close, stdout_fd)
                write_ends.append(stdout_w)
                stderr_fd, stderr_w = os.pipe()
                undo.callback(os.close, stderr_fd)
                write_ends.append(stderr_w)
                started = (time.monotonic(), datetime.now(UTC))
                popen = _popen(spec, stdout_w, stderr_w)
            finally:
                for fd in write_ends:
                    os.close(fd)
            undo.callback(_kill_and_wait, popen)
            try:
                pidfd = os.pidfd_open(popen.pid)
            except OSError as exc:
                raise ExecutionError(f"cannot watch process {popen.pid}: {exc}") from exc
            undo.pop_all()
        logger.debug("started pid %d (%s)", popen.pid, spec.argv[0])
        return cls(loop, popen, pidfd, ((stdout, stdout_fd), (stderr, stderr_fd)), started)

    def _on_exit(self) -> None:
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
        if self.exit_mono is None:
            self.exit_mono = time.monotonic()
            self.finished_at = datetime.now(UTC)
        if not self.exited.done():
            self.exited.set_result(None)

    async def supervise(
        self, timeout_s: float, kill_grace_s: float, cancel: asyncio.Event | None
    ) -> Termination:
        """Wait for exit, timeout or cancel; afterwards the leader is a zombie, its group dead."""
        self._sample_leader()  # right after exec: a floor for jobs that end within a millisecond
        sampler = asyncio.create_task(self._sample_forever())
        waiters: set[asyncio.Future[Any]] = {self.exited}
        cancelled: asyncio.Future[Any] | None = None
        if cancel is not None:
            cancelled = asyncio.ensure_future(cancel.wait())
            waiters.add(cancelled)
        termination: Termination = "exit"
        try:
            await asyncio.wait(
                waiters, timeout=max(timeout_s, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
            if not self.exited.done():
                termination = "timeout"
                if cancelled is not None and cancelled.done():
                    termination = "cancelled"
                await self._terminate(kill_grace_s)
        finally:
            sampler.cancel()
            if cancelled is not None:
                cancelled.cancel()
        # Whatever is left of the group (``sleep 100 &``) dies while the leader is a zombie.
        self._signal_all(signal.SIGKILL, list(self._descendants.values()))
        return termination

    async def _terminate(self, kill_grace_s: float) -> None:
        """SIGTERM the group and every descendant, wait ``kill_grace_s``, then SIGKILL."""
        doomed = [*self._descendants.values(), *await asyncio.to_thread(_children, self.pid)]
        self._signal_all(signal.SIGTERM, doomed)
        self._signal_all(signal.SIGCONT, doomed)  # a stopped process gets its SIGTERM now
        if kill_grace_s > 0:
            await asyncio.wait({self.exited}, timeout=kill_grace_s)
        doomed += await asyncio.to_thread(_children, self.pid)
        self._signal_all(signal.SIGKILL, doomed)
        done, _ = await asyncio.wait({self.exited}, timeout=_SIGKILL_PATIENCE_S)
        if not done:
            logger.warning("process %d survives SIGKILL for now; still waiting", self.pid)
            await self.exited

    def _signal_all(self, sig: int, procs: list[psutil.Process]) -> None:
        if self.reaped:
            return  # the pgid may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        for proc in procs:
            with contextlib.suppress(psutil.Error):  # checks the pid was not reused
                proc.send_signal(sig)

    def _sample_leader(self) -> None:
        """The leader's own peak RSS (VmHWM covers its life since exec), read inline: ~20 us."""
        if self.exited.done():
            return
        status = _status_bytes(self.pid)
        if hwm := status.get("VmHWM"):
            self.peak_hwm_bytes = max(self.peak_hwm_bytes or 0, hwm)
        if vms := status.get("VmSize"):
            self.peak_vms_bytes = max(self.peak_vms_bytes or 0, vms)

    async def _sample_forever(self) -> None:
        # Short jobs end before a tree sample: read the leader at 1, 2, 4, 8 and 16 ms first.
        for delay_s in _LEADER_SAMPLES_S:
            await asyncio.sleep(delay_s)
            self._sample_leader()
        while not self.exited.done():
            sample = await asyncio.to_thread(_sample_tree, self.pid)
            if sample.vms_bytes is not None:
                self.peak_vms_bytes = max(self.peak_vms_bytes or 0, sample.vms_bytes)
            if sample.hwm_bytes is not None:
                self.peak_hwm_bytes = max(self.peak_hwm_bytes or 0, sample.hwm_bytes)
            self._remember(sample.descendants)
            await asyncio.sleep(_SAMPLE_EVERY_S)

    def _remember(self, descendants: list[psutil.Process]) -> None:
        if len(self._descendants) + len(descendants) > _MAX_TRACKED_DESCENDANTS:
            alive = {pid: p for pid, p in self._descendants.items() if p.is_running()}
            self._descendants = alive
        for proc in descendants:
            if len(self._descendants) >= _MAX_TRACKED_DESCENDANTS:
                break
            self._descendants.setdefault(proc.pid, proc)

    def peak_rss_bytes(self, rusage_bytes: int) -> int:
        """wait4's ru_maxrss, unless it can only be the server's own high-water mark.

        At exec the kernel charges the old memory (the server's, shared by vfork or copied by
        fork) to the child's ru_maxrss, so a figure no larger than the server's VmHWM says
        nothing about the job; the largest VmHWM sampled in the tree is used instead (0 if the
        job ended before the first sample).
        """
        sampled = self.peak_hwm_bytes or 0
        if rusage_bytes > self.server_hwm_bytes:
            return max(rusage_bytes, sampled)
        return sampled

    async def reap(self) -> tuple[int, resource.struct_rusage]:
        """Collect the exited leader's status and rusage (it covers its waited-for children)."""
        while True:
            try:
                pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError as exc:
                self._mark_reaped(-1)
                raise ExecutionError(f"process {self.pid} was reaped by someone else") from exc
            if pid:
                self._mark_reaped(status)
                return status, rusage
            await asyncio.sleep(0.001)  # the pidfd said it exited: only a moment away

    def _mark_reaped(self, status: int) -> None:
        self.reaped = True
        self.popen.returncode = os.waitstatus_to_exitcode(status) if status >= 0 else -1
        fd, self.pidfd = self.pidfd, None
        if fd is not None:
            self.loop.remove_reader(fd)
            os.close(fd)

    async def drain(self, timeout_s: float) -> None:
        """Read what the pipes still hold; give up after ``timeout_s`` if someone keeps them."""
        done = await asyncio.gather(
            self.stdout.wait_eof(timeout_s), self.stderr.wait_eof(timeout_s)
        )
        if not all(done):
            logger.info("process %d: an escaped descendant holds its output open", self.pid)
        self.stdout.finish()
        self.stderr.finish()

    def abandon(self) -> None:
        """Kill, reap and close everything without awaiting (we are being cancelled)."""
        try:
            if not self.reaped:
                doomed = [*self._descendants.values(), *_children(self.pid)]
                self._signal_all(signal.SIGKILL, doomed)
                if self.pidfd is not None:  # block briefly: SIGKILLed processes die at once
                    poller = select.poll()
                    poller.register(self.pidfd, select.POLLIN)
                    poller.poll(1000)
                pid, status, _ = os.wait4(self.pid, os.WNOHANG)
                if pid:
                    self._mark_reaped(status)
                else:  # stuck in the kernel: let a thread wait for it
                    logger.warning("process %d outlives SIGKILL; reaping it in a thread", self.pid)
                    self._mark_reaped(-1)
                    self.popen.returncode = None
                    threading.Thread(target=self.popen.wait, daemon=True).start()
        finally:
            self.stdout.close()
            self.stderr.close()
            if not self.reaped:
                self._mark_reaped(-1)


def _popen(spec: ProcessSpec, stdout_fd: int, stderr_fd: int) -> subprocess.Popen[bytes]:
    for fd in (stdout_fd, stderr_fd):
        with contextlib.suppress(OSError):  # fewer wakeups; fine without
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE_BYTES)
    program = spec.argv[0]
    try:
        return subprocess.Popen(
            list(spec.argv),
            cwd=spec.cwd,
            env=dict(spec.env),
            stdin=subprocess.DEVNULL,
            stdout=stdout_fd,
            stderr=stderr_fd,
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.filename is not None and str(exc.filename) == str(spec.cwd) != program:
            raise ExecutionError(f"cannot start {program!r} in {spec.cwd}: {reason}") from exc
        raise ExecutionError(f"cannot start {program!r}: {reason}") from exc
    except ValueError as exc:  # e.g. an embedded NUL byte
        raise ExecutionError(f"cannot start {program!r}: {exc}") from exc


def _kill_and_wait(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait()


def _children(pid: int) -> list[psutil.Process]:
    """All descendants of ``pid`` now (a scan of /proc: call it off the loop when you can)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


class _Sample(NamedTuple):
    vms_bytes: int | None  # summed over the tree
    hwm_bytes: int | None  # the largest peak RSS of one process
    descendants: list[psutil.Process]


def _sample_tree(pid: int) -> _Sample:
    """Memory of ``pid`` and its descendants, and those descendants (runs in a thread)."""
    descendants = _children(pid)
    vms_bytes = hwm_bytes = 0
    for member in (pid, *(proc.pid for proc in descendants)):
        status = _status_bytes(member)
        vms_bytes += status.get("VmSize", 0)
        hwm_bytes = max(hwm_bytes, status.get("VmHWM", 0))
    return _Sample(vms_bytes or None, hwm_bytes or None, descendants)


def _status_bytes(pid: int | str) -> dict[str, int]:
    """VmSize and VmHWM of ``/proc/<pid>/status`` in bytes; {} if gone, no keys for a zombie."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            lines = status.read().splitlines()
    except OSError:
        return {}
    found: dict[str, int] = {}
    for line in lines:
        if line.startswith((b"VmSize:", b"VmHWM:")):
            name, _, value = line.partition(b":")
            found[name.decode()] = int(value.split()[0]) * 1024
    return found
