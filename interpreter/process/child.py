"""How one process is held: spawn it (behind the gate when confined), watch it for
exit, timeout, cancel and limits, kill everything it started, sample what it uses, reap it.

Why one module of ~600 lines: ``Child`` owns one process group from spawn to reap, and its kill
paths (confined by the cgroup or not) must see the same state of the leader and its pidfd."""

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
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import psutil

from interpreter.errors import ExecutionError
from interpreter.process.orphans import GUARD
from interpreter.process.output import StreamCapture
from interpreter.process.spec import ProcessSpec, Termination
from interpreter.sandbox.base import CgroupUsage, Confinement, gated, over_limit, sealed

logger = logging.getLogger(__name__)

_PIPE_SIZE_BYTES = 1 << 20
_LEADER_SAMPLES_S = (0.001, 0.001, 0.002, 0.004, 0.008)
_SAMPLE_EVERY_S = 0.1
_SIGKILL_PATIENCE_S = 5.0
_RESIGNAL_EVERY_S = 0.01  # during the grace: how often the cgroup is checked for new processes
_MAX_TRACKED_DESCENDANTS = 4096


class Child:
    """One spawned process group: its pipes, its pidfd and what we learn while it runs.

    The leader is reaped only by ``reap`` (or ``abandon``); until then its pid, and so its
    process group id, cannot be reused, which makes every ``killpg`` before it safe.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        popen: _Process,
        pidfd: int,
        outputs: tuple[tuple[StreamCapture, int], tuple[StreamCapture, int]],
        started: tuple[float, datetime],
        spec: ProcessSpec,
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
        self.server_hwm_bytes = _server_memory_bytes()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.confinement = spec.confinement
        self.limit_hit: asyncio.Future[Termination] = loop.create_future()  # set by the sampler
        self._workspace = spec.workspace
        self._watched = spec.orphan_marks is not None  # by orphans.GUARD, until reaped
        self._descendants: dict[int, psutil.Process] = {}
        (self.stdout, stdout_fd), (self.stderr, stderr_fd) = outputs
        loop.add_reader(pidfd, self._on_exit)
        self.stdout.attach(loop, stdout_fd)
        self.stderr.attach(loop, stderr_fd)

    @classmethod
    def spawn(cls, spec: ProcessSpec, loop: asyncio.AbstractEventLoop) -> Child:
        """Start ``spec.argv`` in its own session; ``ExecutionError`` if it cannot start."""
        return cls._held(loop, spec, cls._start(spec))

    @classmethod
    async def start(cls, spec: ProcessSpec, loop: asyncio.AbstractEventLoop) -> Child:
        """``spawn``, off the loop when a warm parent may start it (that waits for its answer,
        a few milliseconds): the loop serves other jobs meanwhile."""
        if spec.warm is None:
            return cls.spawn(spec, loop)
        starting = asyncio.ensure_future(asyncio.to_thread(cls._start, spec))
        try:
            started = await asyncio.shield(starting)
        except asyncio.CancelledError:
            await asyncio.wait({starting})
            if not starting.cancelled() and starting.exception() is None:
                cls._held(loop, spec, starting.result()).abandon()
            raise
        return cls._held(loop, spec, started)

    @classmethod
    def _held(cls, loop: asyncio.AbstractEventLoop, spec: ProcessSpec, started: _Started) -> Child:
        supervisor = cls(loop, started.popen, started.pidfd, started.outputs, started.at, spec)
        supervisor.server_hwm_bytes = max(supervisor.server_hwm_bytes, started.server_bytes)
        return supervisor

    @staticmethod
    def _start(spec: ProcessSpec) -> _Started:
        if not spec.argv:
            raise ExecutionError("cannot start a process: argv is empty")
        with contextlib.ExitStack() as undo:
            try:
                stdout = StreamCapture(
                    spec.stdout_path, spec.output_limit_bytes, _listener(spec, "stdout")
                )
                undo.callback(stdout.close)
                stderr = StreamCapture(
                    spec.stderr_path, spec.output_limit_bytes, _listener(spec, "stderr")
                )
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
                for fd in (stdout_w, stderr_w):
                    with contextlib.suppress(OSError):  # fewer wakeups; fine without
                        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE_BYTES)
                job_stdin = None if spec.stdin is None else _stdin_file(spec.stdin)
                if job_stdin is not None:
                    write_ends.append(job_stdin)
                server_before = _server_memory_bytes()
                started = (time.monotonic(), datetime.now(UTC))
                gate_w: int | None = None
                popen: _Process
                if spec.confinement is None:
                    stdin = subprocess.DEVNULL if job_stdin is None else job_stdin
                    popen = _popen(spec, stdout_w, stderr_w, stdin=stdin)
                elif (forked := _warm_start(spec, stdout_w, stderr_w, job_stdin)) is not None:
                    popen = forked  # in its cgroup with its rlimits already
                    gate_w = None
                else:
                    gate_r, gate_w = os.pipe()
                    undo.callback(_close, gate_w)
                    write_ends.append(gate_r)
                    popen = _popen(spec, stdout_w, stderr_w, stdin=gate_r, job_stdin=job_stdin)
            finally:
                for fd in write_ends:
                    os.close(fd)
            undo.callback(_kill_and_wait, popen, spec.confinement)
            if spec.orphan_marks is not None:  # dies with us, though not in a sandbox
                GUARD.watch(popen.pid, spec.orphan_marks)
                undo.callback(GUARD.forget, popen.pid)  # before the reap of _kill_and_wait
            if gate_w is not None:  # the gate joins its cgroup; rlimits, then go
                assert spec.confinement is not None
                spec.confinement.admit(popen.pid)
                with contextlib.suppress(BrokenPipeError):  # it could not join: it says so
                    os.write(gate_w, b"\n")
            try:
                pidfd = os.pidfd_open(popen.pid)
            except OSError as exc:
                raise ExecutionError(f"cannot watch process {popen.pid}: {exc}") from exc
            undo.pop_all()
            if gate_w is not None:
                os.close(gate_w)
        logger.debug("started pid %d (%s)", popen.pid, spec.argv[0])
        outputs = ((stdout, stdout_fd), (stderr, stderr_fd))
        return _Started(popen, pidfd, outputs, started, server_before)

    def _leader_exited(self) -> bool:
        """Whether the leader has exited though ``_on_exit`` has not run yet (its pidfd is
        readable): a cancel or timeout that comes then found the job already ended."""
        if self.pidfd is None:
            return False
        readable, _, _ = select.select([self.pidfd], [], [], 0)
        return bool(readable)

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
        """Wait for exit, timeout, cancel or a limit; afterwards the leader is a zombie and
        everything it started is dead."""
        if self.confinement is None:
            self._sample_leader()  # right after exec: a floor for jobs ending within a millisecond
            sampler = asyncio.create_task(self._sample_forever())
        else:
            sampler = asyncio.create_task(self._watch_confined())
        waiters: set[asyncio.Future[Any]] = {self.exited, self.limit_hit}
        cancelled: asyncio.Future[Any] | None = None
        if cancel is not None:
            cancelled = asyncio.ensure_future(cancel.wait())
            waiters.add(cancelled)
        termination: Termination = "exit"
        try:
            await asyncio.wait(
                waiters, timeout=max(timeout_s, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
            if not self.exited.done() and self._leader_exited():
                self._on_exit()  # it ended on its own before the loop heard: not a timeout
            if not self.exited.done():
                if self.limit_hit.done():  # a limit is a hard stop: no grace
                    termination = self.limit_hit.result()
                    await self._terminate(0.0)
                else:
                    termination = "timeout"
                    if cancelled is not None and cancelled.done():
                        termination = "cancelled"
                        # the job may be final (and swept) before its process is dead
                        self.stdout.create_file()
                        self.stderr.create_file()
                    await self._terminate(kill_grace_s)
        finally:
            sampler.cancel()
            if cancelled is not None:
                cancelled.cancel()
        # Whatever is left (``sleep 100 &``, a daemon) dies while the leader is a zombie.
        if self.confinement is not None:
            if self.confinement.occupied():  # normally the pid namespace took them all
                await asyncio.to_thread(self.confinement.kill_all)
        else:
            self._signal_all(signal.SIGKILL, list(self._descendants.values()))
        return termination

    async def _terminate(self, kill_grace_s: float) -> None:
        """SIGTERM the group and every descendant, wait ``kill_grace_s``, then SIGKILL."""
        if self.confinement is not None:
            await self._terminate_confined(kill_grace_s)
            return
        doomed = [*self._descendants.values(), *await asyncio.to_thread(_children, self.pid, True)]
        self._signal_all(signal.SIGTERM, doomed)
        self._signal_all(signal.SIGCONT, doomed)  # a stopped process gets its SIGTERM now
        if kill_grace_s > 0:
            await asyncio.wait({self.exited}, timeout=kill_grace_s)
        doomed += await asyncio.to_thread(_children, self.pid, True)
        self._signal_all(signal.SIGKILL, doomed)
        done, _ = await asyncio.wait({self.exited}, timeout=_SIGKILL_PATIENCE_S)
        if not done:
            logger.warning("process %d survives SIGKILL for now; still waiting", self.pid)
            await self.exited

    async def _terminate_confined(self, kill_grace_s: float) -> None:
        """The same through the cgroup, sparing the leader from SIGTERM: the sandbox's own
        process would otherwise take the job down at once, without its grace.

        A job stopped in its first milliseconds may not have started its command yet, and the
        sandbox's init ignores SIGTERM from outside: so for the whole grace, every process that
        joins the cgroup gets its SIGTERM (and SIGCONT) within ``_RESIGNAL_EVERY_S`` of being
        listed there, once each. At the grace's end everything left is SIGKILLed."""
        assert self.confinement is not None
        if kill_grace_s > 0:
            spared = _SignalledOnce(always=(self.pid,))
            give_up = self.loop.time() + kill_grace_s
            while not self.exited.done():
                spared.begin_round()
                self.confinement.signal(signal.SIGTERM, spare=spared)
                for pid in spared.end_round():  # a stopped process gets its SIGTERM now
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGCONT)
                left_s = give_up - self.loop.time()
                if left_s <= 0:
                    break
                await asyncio.wait({self.exited}, timeout=min(_RESIGNAL_EVERY_S, left_s))
        if not self.exited.done():
            await asyncio.to_thread(self._kill_confined)
        done, _ = await asyncio.wait({self.exited}, timeout=_SIGKILL_PATIENCE_S)
        if not done:
            logger.warning("process %d survives SIGKILL for now; still waiting", self.pid)
            await self.exited

    def _kill_confined(self) -> None:
        assert self.confinement is not None
        self.confinement.kill_all()
        if not self.reaped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    async def _watch_confined(self) -> None:
        """Every 100 ms: the cgroup's CPU time against its limit, and what the job wrote to its
        working directory's filesystem against its limit (one statvfs). Sets ``limit_hit`` when
        one is passed."""
        assert self.confinement is not None
        cpu_limit_s = self.confinement.cpu_limit_s
        while not self.exited.done():
            await asyncio.sleep(_SAMPLE_EVERY_S)
            try:
                usage = self.confinement.usage()
                full = self._workspace is not None and over_limit(self._workspace)
            except OSError:
                return
            if cpu_limit_s is not None and usage.cpu_total_s >= cpu_limit_s:
                self.limit_hit.set_result("cpu_limit")
                return
            if full:
                self.limit_hit.set_result("workspace_limit")
                return

    def final_usage(self) -> CgroupUsage | None:
        """What the whole cgroup used (read once the job is over), or None when unconfined."""
        if self.confinement is None:
            return None
        try:
            return self.confinement.usage()
        except OSError as exc:
            logger.warning("process %d: cannot read its cgroup's usage: %s", self.pid, exc)
            return None

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
        server = self.server_hwm_bytes
        # The kernel's figures for the server move between our reading and the child's exec
        # (other threads allocate; the high-water mark is kept lazily): only a ru_maxrss clearly
        # above the server's says anything about the job.
        if rusage_bytes > server + max(_SERVER_MARGIN_BYTES, server // 8):
            return max(rusage_bytes, sampled)
        return sampled

    async def reap(self) -> tuple[int, resource.struct_rusage]:
        """Collect the exited leader's status and rusage (it covers its waited-for children)."""
        self._unwatch()
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

    def _unwatch(self) -> None:
        """Before the leader is reaped (its pid, its group's id, free for reuse): the watcher
        must no longer kill that group should we die."""
        if self._watched:
            self._watched = False
            GUARD.forget(self.pid)

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
                if self.confinement is not None:
                    self._kill_confined()
                doomed = [*self._descendants.values(), *_children(self.pid, fresh=True)]
                self._signal_all(signal.SIGKILL, doomed)
                if self.pidfd is not None:  # block briefly: SIGKILLed processes die at once
                    poller = select.poll()
                    poller.register(self.pidfd, select.POLLIN)
                    poller.poll(1000)
                self._unwatch()
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


class _SignalledOnce(Collection[int]):
    """What a SIGTERM round through ``Confinement.signal`` spares: the ``always`` pids and
    every pid signalled in an earlier round, so that each process of the job gets the signal
    once, in the first round that lists it.

    ``signal`` asks ``pid in spare`` once for each process in the cgroup; a pid asked about
    for the first time is answered "not spared" and remembered as signalled. A pid no longer
    listed is forgotten at the round's end: its number may come back as another process."""

    def __init__(self, always: Collection[int]) -> None:
        self.always = frozenset(always)
        self.signalled: set[int] = set()
        self.listed: set[int] = set()
        self.fresh: list[int] = []

    def begin_round(self) -> None:
        self.listed = set()
        self.fresh = []

    def end_round(self) -> list[int]:
        """The pids signalled in this round."""
        self.signalled &= self.listed
        return self.fresh

    def __contains__(self, pid: object) -> bool:
        if not isinstance(pid, int) or pid in self.always:
            return True
        self.listed.add(pid)
        if pid in self.signalled:
            return True
        self.signalled.add(pid)
        self.fresh.append(pid)
        return False

    def __iter__(self) -> Iterator[int]:
        return iter(self.always | self.signalled)

    def __len__(self) -> int:
        return len(self.always | self.signalled)


def _stdin_file(data: bytes) -> int:
    """The job's stdin: a sealed in-memory file (end of file after ``data``, never blocking)."""
    try:
        return sealed(data, "stdin")
    except OSError as exc:
        raise ExecutionError(f"cannot prepare the job's stdin: {exc.strerror or exc}") from exc


def _popen(
    spec: ProcessSpec,
    stdout_fd: int,
    stderr_fd: int,
    stdin: int = subprocess.DEVNULL,
    job_stdin: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``spec.argv`` (behind the gate when confined, which then reads ``stdin`` for its
    go-ahead and hands the job ``job_stdin``)."""
    program = spec.argv[0]
    try:
        return subprocess.Popen(
            gated(spec.confinement.join_files, spec.argv, stdin_fd=job_stdin)
            if spec.confinement is not None
            else list(spec.argv),
            pass_fds=spec.pass_fds if job_stdin is None else (*spec.pass_fds, job_stdin),
            cwd=spec.spawn_cwd or spec.cwd,
            env=dict(spec.env),
            stdin=stdin,
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


class _Started(NamedTuple):
    """A process just started, before the loop watches it."""

    popen: _Process
    pidfd: int
    outputs: tuple[tuple[StreamCapture, int], tuple[StreamCapture, int]]
    at: tuple[float, datetime]
    server_bytes: int


class _Process(Protocol):
    """What is held of the leader: a ``subprocess.Popen``, or a ``_Forked`` one."""

    pid: int
    returncode: int | None

    def wait(self) -> int: ...


class _Forked:
    """A leader a warm parent cloned as our child: waited for like one we spawned."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _warm_start(spec: ProcessSpec, stdout: int, stderr: int, stdin: int | None) -> _Forked | None:
    """The job started by a warm parent, or None (then it starts cold)."""
    if spec.warm is None:
        return None
    pid = spec.warm.start(stdout, stderr, stdin)
    return None if pid is None else _Forked(pid)


def _kill_and_wait(popen: _Process, confinement: Confinement | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    if confinement is not None:
        with contextlib.suppress(OSError):
            confinement.kill_all()
    popen.wait()


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class _ParentMap:
    """Every process's parent, from one scan of /proc shared by every job running here for
    ``ttl_s``: the scan costs ~1 ms a hundred processes, and each running job's tree sample
    needed one of its own (30% of a worker's CPU running four sleep jobs at once)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._taken = -1e9
        self._children: dict[int, list[int]] = {}

    def children_of(self, fresh: bool = False) -> dict[int, list[int]]:
        with self._lock:
            now = time.monotonic()
            if fresh or now - self._taken >= self.ttl_s:
                self._children = _scan_parents()
                self._taken = time.monotonic()
            return self._children


def _scan_parents() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ")" ends it
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


_PARENTS = _ParentMap(ttl_s=_SAMPLE_EVERY_S / 2)


def _children(pid: int, fresh: bool = False) -> list[psutil.Process]:
    """All descendants of ``pid`` as of a /proc scan at most half a sample period old, or of a
    new one (``fresh``: before a kill). A scan: call it off the loop when you can."""
    tree = _PARENTS.children_of(fresh)
    found: list[psutil.Process] = []
    todo = list(tree.get(pid, ()))
    seen = {pid}
    while todo:
        child = todo.pop()
        if child in seen:
            continue
        seen.add(child)
        with contextlib.suppress(psutil.Error):  # it may have exited since the scan
            found.append(psutil.Process(child))
        todo.extend(tree.get(child, ()))
    return found


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


_SERVER_MARGIN_BYTES = 32 << 20


def _server_memory_bytes() -> int:
    """This process's memory as a child's ru_maxrss may inherit it at exec: its high-water mark
    or its resident size, whichever is larger."""
    status = _status_bytes("self", (b"VmHWM:", b"VmRSS:"))
    return max(status.values(), default=0)


def _status_bytes(
    pid: int | str, fields: tuple[bytes, ...] = (b"VmSize:", b"VmHWM:")
) -> dict[str, int]:
    """``fields`` of ``/proc/<pid>/status`` in bytes; {} if gone, no keys for a zombie."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            lines = status.read().splitlines()
    except OSError:
        return {}
    found: dict[str, int] = {}
    for line in lines:
        if line.startswith(fields):
            name, _, value = line.partition(b":")
            found[name.decode()] = int(value.split()[0]) * 1024
    return found


def _listener(spec: ProcessSpec, stream: str) -> Callable[[int, bytes], None] | None:
    """``spec.on_output`` for one stream, if any."""
    on_output = spec.on_output
    if on_output is None:
        return None
    return lambda offset, data: on_output(stream, offset, data)
