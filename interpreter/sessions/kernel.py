"""One ipykernel in the sandbox, and the server's client of it over ZeroMQ ipc.

The kernel is started as a job's process is (``sandbox.prepare``: a uid of its own, a cgroup
with the session's limits, bubblewrap with no network) and held by ``run_process`` for its whole
life: its exit, whatever the cause (the OOM killer, a crash, a kill), is known at once. It binds
its five sockets in a directory of the host bound into the sandbox at ``KERNEL_DIR``; once it is
ready the directory is the server's again (root-owned, read-only to the kernel's uid), so code in
the kernel cannot replace a socket. Everything the kernel sends is untrusted: each message is
capped (``MAX_MESSAGE_BYTES``: ZeroMQ drops the connection of a bigger one), and only the fields
read here, checked for their type, reach a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zmq
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient

from interpreter.errors import ExecutionError, KernelExited
from interpreter.limits import ResourceLimits
from interpreter.process.orphans import OrphanMarks
from interpreter.process.run import run_process
from interpreter.process.spec import ProcessOutcome, ProcessSpec
from interpreter.sandbox.base import Prepared, Sandbox, SandboxJob

logger = logging.getLogger(__name__)

KERNEL_DIR = "/.kernel"  # where a sandboxed kernel sees its socket directory
READY_TIMEOUT_S = 60.0
INTERRUPT_GRACE_S = 3.0  # after an interrupt, how long a cell may take to stop before a kill
INTERRUPTS = 3  # interrupt requests sent over that grace
MAX_MESSAGE_BYTES = 32 * 2**20  # a bigger one drops the connection (it reconnects)
QUEUED_MESSAGES = 16
SOCKETS = frozenset(f"k-{n}" for n in range(1, 6))
QUIET_S = 0.5  # after its reply, iopub this long quiet ends a cell whose idle status was lost
REPLY_WAIT_S = 7 * 24 * 3600.0  # a cell's reply is read for as long as the cell runs
LOG_BYTES = 64 * 1024  # the kernel process's own stdout and stderr (its log), kept for errors
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Launch:
    """What a kernel is started with."""

    name: str  # its cgroup's name: one per start
    python: str  # the interpreter, as the sandbox sees it
    module: str  # the kernel it runs: ipykernel_launcher, bash_kernel
    cwd: Path
    cwd_fd: int  # the session's directory, opened beneath the workspace root (the caller's)
    env: Mapping[str, str]
    limits: ResourceLimits
    venv: Path | None
    lifetime_s: float
    kill_grace_s: float


class CellSink:
    """Where a cell's outputs go as they arrive."""

    def stream(self, name: str, text: str) -> None: ...

    def bundle(self, kind: str, data: dict[str, Any]) -> None: ...

    def error(self, name: str, value: str, traceback: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CellEnd:
    """How a cell ended: ``ok``, ``error`` (it raised), ``interrupted`` (it stopped after an
    interrupt), ``killed`` (it did not: the kernel was killed), ``died`` (the kernel ended by
    itself: ``outcome`` says how) or ``ended`` (the server stopped the kernel: the session
    ended)."""

    how: str
    outcome: ProcessOutcome | None = None


def plain(text: str) -> str:
    return ANSI.sub("", text)


class Kernel:
    def __init__(self, sandbox: Sandbox, socket_dir: Path, log_dir: Path) -> None:
        self.sandbox = sandbox
        self.socket_dir = socket_dir
        self.log_dir = log_dir
        self.client: AsyncKernelClient | None = None
        self._context: zmq.asyncio.Context | None = None
        self._kill = asyncio.Event()
        self._process: asyncio.Task[ProcessOutcome] | None = None
        self.stopped = False  # stop() was called: the server ended it
        # The kernel's directory as it sees it (its volume's view), for reading its files while
        # it runs; closed, under the lock, before its changes are applied to the directory.
        self._root: int | None = None
        self._root_lock = threading.Lock()

    # -- life ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process is not None and not self._process.done()

    @property
    def ended(self) -> asyncio.Task[ProcessOutcome]:
        assert self._process is not None
        return self._process

    async def start(self, launch: Launch) -> None:
        """Start the kernel and wait until it answers (``ExecutionError`` when it cannot)."""
        sandboxed = self.sandbox.name != "none"
        inside = KERNEL_DIR if sandboxed else str(self.socket_dir)
        if self.socket_dir.exists():
            shutil.rmtree(self.socket_dir)
        self.socket_dir.mkdir(mode=0o700, parents=True)
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        ports = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
        info: dict[str, Any] = {
            "transport": "ipc",
            "signature_scheme": "hmac-sha256",
            "key": key,
            "kernel_name": "python3",
            **ports,
        }
        connection = self.socket_dir / "connection.json"
        fd = os.open(connection, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as file:
            json.dump({**info, "ip": f"{inside}/k"}, file)
        argv = (
            launch.python,
            "-P",  # the session's directory is not on sys.path while the kernel starts
            "-m",
            launch.module,
            "-f",
            f"{inside}/connection.json",
            "--InteractiveShell.colors=nocolor",
            "--HistoryManager.enabled=False",
        )
        job = SandboxJob(
            job_id=launch.name,
            # not "python": no RLIMIT_AS (ipykernel maps far more than it uses, and fails to
            # start under 768 MiB of address space); the cgroup bounds its memory
            language="ipykernel",
            argv=argv,
            cwd=launch.cwd,
            env=launch.env,
            limits=launch.limits,
            cwd_fd=launch.cwd_fd,
            venv=launch.venv,
            binds=((self.socket_dir, KERNEL_DIR),),
        )
        prepared = await asyncio.to_thread(self.sandbox.prepare, job)
        try:
            view = launch.cwd_fd if prepared.view_fd is None else prepared.view_fd
            self._root = os.dup(view)
            if prepared.uid is not None:  # the kernel binds its sockets there, then no more
                os.chown(self.socket_dir, prepared.uid, prepared.uid)
            spec = ProcessSpec(
                argv=prepared.argv,
                cwd=launch.cwd,
                cwd_fd=launch.cwd_fd if prepared.view_fd is None else prepared.view_fd,
                spawn_cwd=prepared.spawn_cwd,
                env=prepared.env,
                timeout_s=launch.lifetime_s,
                stdout_path=self.log_dir / "kernel.stdout",
                stderr_path=self.log_dir / "kernel.stderr",
                output_limit_bytes=LOG_BYTES,
                kill_grace_s=launch.kill_grace_s,
                track_files=False,
                cwd_is_fresh=True,
                confinement=prepared.confinement,
                workspace=prepared.workspace,
                pass_fds=prepared.pass_fds,
                orphan_marks=None
                if prepared.confinement is not None
                else OrphanMarks(tmpdir=None, workdir=str(launch.cwd)),
            )
        except BaseException:
            self._close_root()
            self.sandbox.release(prepared)
            raise
        self._kill = asyncio.Event()
        self._process = asyncio.create_task(self._run(spec, prepared), name=f"kernel {job.job_id}")
        try:
            await self._connect({**info, "ip": f"{self.socket_dir}/k"})
        except BaseException:
            await self.stop()
            raise
        if prepared.uid is not None:
            try:
                self._seal()
            except BaseException:
                await self.stop()
                raise

    def _seal(self) -> None:
        """Make the socket directory root's again, holding only the connection file and the
        kernel's sockets: whatever else code in the kernel could have put there while it
        started (a package's .pth, PYTHONPATH) is removed, and a socket that is not one (a
        symlink the server would follow when it reconnects) refuses the start."""
        os.chown(self.socket_dir, 0, 0)
        os.chmod(self.socket_dir, 0o755)
        for entry in os.scandir(self.socket_dir):
            mode = os.lstat(entry.path).st_mode
            if entry.name in SOCKETS and stat.S_ISSOCK(mode):
                continue
            if entry.name == "connection.json" and stat.S_ISREG(mode):
                continue
            if stat.S_ISDIR(mode):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        for name in ("k-1", "k-2", "k-4"):  # shell, iopub, control
            if not (self.socket_dir / name).exists():
                raise ExecutionError("the kernel's sockets are not where it was told to bind them")

    async def _run(self, spec: ProcessSpec, prepared: Prepared) -> ProcessOutcome:
        try:
            return await run_process(spec, self._kill)
        finally:
            try:
                await asyncio.shield(asyncio.to_thread(self._collect, prepared))
            finally:
                self.sandbox.release(prepared)

    def _collect(self, prepared: Prepared) -> None:
        self._close_root()
        self.sandbox.collect(prepared)

    def _close_root(self) -> None:
        with self._root_lock:
            if self._root is not None:
                os.close(self._root)
                self._root = None

    def with_root(self, read: Callable[[int], T]) -> T | None:
        """``read`` called (in this thread) with a descriptor of the kernel's directory as the
        kernel sees it; None once the kernel has ended. A file ``read`` leaves open outlives
        the call: its directory is then detached lazily when the kernel ends."""
        with self._root_lock:
            if self._root is None:
                return None
            fd = os.dup(self._root)
            try:
                return read(fd)
            except OSError:
                return None
            finally:
                os.close(fd)

    async def _connect(self, info: dict[str, Any]) -> None:
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        # A few messages queued per socket, not ZeroMQ's 1000: what a kernel sends between
        # cells (nobody reads iopub then) or faster than it is read is dropped, not held
        context.setsockopt(zmq.RCVHWM, QUEUED_MESSAGES)
        context.setsockopt(zmq.SNDHWM, QUEUED_MESSAGES)
        context.setsockopt(zmq.LINGER, 0)
        self._context = context
        client = AsyncKernelClient(context=context)
        client.load_connection_info(info)  # type: ignore[arg-type]
        client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)
        self.client = client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while True:
            if not self.running:
                raise KernelExited(f"the kernel exited at start: {self.log_tail()}")
            if loop.time() > deadline:
                raise ExecutionError(f"the kernel did not answer within {READY_TIMEOUT_S:g} s")
            msg_id = client.kernel_info()
            try:  # its reply on shell, and its status on iopub: both channels are connected
                await self._reply(msg_id, 1.0)
                if await self._status_seen(msg_id, 1.0):
                    return
            except queue.Empty:
                continue

    async def _reply(self, msg_id: str, timeout_s: float) -> dict[str, Any]:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                msg = await self.client.get_shell_msg(timeout=max(deadline - loop.time(), 0.001))
            except (queue.Empty, asyncio.CancelledError, zmq.ZMQError):
                raise
            except Exception as exc:  # not a message we can read (the kernel is untrusted)
                logger.warning("a kernel message was dropped: %s", type(exc).__name__)
                continue
            if _parent(msg) == msg_id:
                content = msg.get("content")
                return content if isinstance(content, dict) else {}

    async def _status_seen(self, msg_id: str, timeout_s: float) -> bool:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            try:
                msg = await self.client.get_iopub_msg(timeout=max(deadline - loop.time(), 0.001))
            except queue.Empty:
                return False
            except (asyncio.CancelledError, zmq.ZMQError):
                raise
            except Exception:  # not a message we can read
                continue
            if _parent(msg) == msg_id and msg.get("msg_type") == "status":
                return True
        return False

    def log_tail(self) -> str:
        """Why the kernel could not start, from the end of its own output."""
        try:
            text = (self.log_dir / "kernel.stderr").read_bytes()[-2000:]
        except OSError:
            return "no output"
        return last_words(text.decode("utf-8", "replace"))

    def interrupt(self) -> None:
        """Ask the kernel to interrupt what it runs (a ``KeyboardInterrupt`` in the cell)."""
        if self.client is None or not self.running:
            return
        message = self.client.session.msg("interrupt_request", {})
        self.client.control_channel.send(message)

    async def stop(self) -> ProcessOutcome | None:
        """Kill the kernel (its whole cgroup) and wait for it, then close the client: a cell
        being read ends as ``ended``."""
        self.stopped = True
        outcome = None
        if self._process is not None:
            self._kill.set()
            try:
                outcome = await asyncio.shield(self._process)
            except Exception as exc:
                logger.warning("a kernel did not stop cleanly: %s", exc)
        if self.client is not None:
            self.client.stop_channels()
            self.client = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        return outcome

    def _ended(self) -> CellEnd:
        """How a cell ends when its kernel is gone: ``ended`` (stopped by the server), else
        ``died`` with how the process ended."""
        task = self._process
        if self.stopped or task is None or not task.done():
            return CellEnd("ended")
        if task.cancelled() or task.exception() is not None:
            return CellEnd("ended")
        return CellEnd("died", task.result())

    def _read(self, reading: asyncio.Task[CellEnd]) -> CellEnd:
        if reading.cancelled() or reading.exception() is not None:  # its channel closed
            return self._ended()
        return reading.result()

    # -- cells -----------------------------------------------------------------------------
    async def execute(
        self, code: str, timeout_s: float, cancel: asyncio.Event, sink: CellSink
    ) -> tuple[CellEnd, str | None]:
        """Run ``code`` as a cell; outputs go to ``sink``. Returns how it ended and, when it
        was stopped, why (``timeout`` or ``cancelled``)."""
        assert self.client is not None and self._process is not None
        msg_id = self.client.execute(
            code, silent=False, store_history=True, allow_stdin=False, stop_on_error=True
        )
        reading = asyncio.create_task(self._read_cell(msg_id, sink))
        cancelled = asyncio.create_task(cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {reading, self._process, cancelled},
                timeout=timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if reading in done:
                return self._read(reading), None
            if self._process in done:
                return self._ended(), None
            stopped_by = "cancelled" if cancelled in done else "timeout"
            done = set()
            for _ in range(INTERRUPTS):  # sent again: one can be lost on a loaded machine
                self.interrupt()
                done, _ = await asyncio.wait(
                    {reading, self._process},
                    timeout=INTERRUPT_GRACE_S / INTERRUPTS,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if done:
                    break
            if reading in done:
                end = self._read(reading)
                return (CellEnd("interrupted") if end.how in ("ok", "error") else end), stopped_by
            if self._process in done:
                return self._ended(), stopped_by
            await self.stop()
            return CellEnd("killed"), stopped_by
        finally:
            for task in (reading, cancelled):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading

    async def _read_cell(self, msg_id: str, sink: CellSink) -> CellEnd:
        """The cell's outputs until the kernel is idle again. Its reply (on shell) is read
        alongside: ZeroMQ drops what a slow reader leaves queued past ``QUEUED_MESSAGES``,
        and a cell whose idle status was dropped ends once it replied and iopub went quiet."""
        replied = asyncio.ensure_future(self._reply(msg_id, REPLY_WAIT_S))
        try:
            return await self._outputs(msg_id, sink, replied)
        finally:
            replied.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await replied

    async def _outputs(
        self, msg_id: str, sink: CellSink, replied: asyncio.Future[dict[str, Any]]
    ) -> CellEnd:
        assert self.client is not None
        failed = False
        while True:
            try:
                msg = await self.client.get_iopub_msg(timeout=QUIET_S)
            except queue.Empty:
                if replied.done():  # it replied, and nothing came since: its idle was lost
                    break
                continue
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError:
                raise
            except Exception as exc:  # not a message we can read (the kernel is untrusted)
                logger.warning("a kernel message was dropped: %s", type(exc).__name__)
                continue
            if _parent(msg) != msg_id:
                continue
            kind, content = msg.get("msg_type"), msg.get("content")
            if not isinstance(content, dict):
                continue
            if kind == "stream":
                text = content.get("text")
                if isinstance(text, str):
                    sink.stream(str(content.get("name")), text)
            elif kind in ("execute_result", "display_data"):
                data = content.get("data")
                if isinstance(data, dict):
                    sink.bundle(str(kind), data)
            elif kind == "error":
                failed = True
                trace = content.get("traceback")
                lines = [str(x) for x in trace] if isinstance(trace, list) else []
                sink.error(
                    plain(str(content.get("ename", ""))),
                    plain(str(content.get("evalue", ""))),
                    plain("\n".join(lines)),
                )
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        with contextlib.suppress(queue.Empty, TimeoutError):  # replies never pile up
            reply = await asyncio.wait_for(asyncio.shield(replied), 2.0)
            failed = failed or reply.get("status") == "error"
        return CellEnd("error" if failed else "ok")


# A line that states an exception: "ValueError: ...", "module.SomeError: ...", "KeyboardInterrupt"
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: .*)?$")


def last_words(text: str) -> str:
    """The line of a dying interpreter's output that says why: its exception, which is the last
    line of a traceback but comes before the thread dump of a fatal error ("LookupError:
    unknown encoding: ..." then "<no Python frame>"); else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "no output"
    stated = [line for line in lines if EXCEPTION_LINE.match(line)]
    return (stated[-1] if stated else lines[-1])[:300]


def _parent(msg: Any) -> Any:
    header = msg.get("parent_header") if isinstance(msg, dict) else None
    return header.get("msg_id") if isinstance(header, dict) else None
