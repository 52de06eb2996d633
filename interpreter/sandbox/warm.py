"""The warm pool: sandboxed Python parents that fork each Python job (``zygote.py`` runs in them).

A parent is started per package environment (the plain interpreter, and the default environment
once a job uses it), ``min(INTERPRETER_MAX_JOBS, CPUs)`` of each: a parent only starts a job (a
millisecond or two), the job then runs in processes of its own. The server asks a parent for a
job with ``WarmStart.start`` when it would otherwise spawn the cold sandbox: the parent clones
the job's leader as the server's own child, already in its cgroup with its rlimits, so from
there the job is held exactly as a cold one (its pid, pidfd, cgroup, wait status and rusage).

A job goes warm only when the parent can run it as the cold launch would: a Python job, the
interpreter and environment of a parent, no ``PYTHON*`` or locale variable of its own (they
change how an interpreter starts, which the parent did already) and a working directory.
When no parent is free, alive or started yet, the job runs cold (a miss): nothing waits for a
parent. A parent that dies or fails is replaced in the background; one that has started
``INTERPRETER_WARM_POOL_RECYCLE`` jobs is replaced too. Jobs it started run on: they are the
server's children, not the parent's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interpreter.errors import ExecutionError
from interpreter.sandbox import zygote
from interpreter.sandbox.base import sealed

logger = logging.getLogger(__name__)

SOURCE = Path(zygote.__file__).read_text(encoding="utf-8")
START_TIMEOUT_S = 120.0  # a parent imports its environment's modules: numpy + pandas take ~1 s
REQUEST_TIMEOUT_S = 5.0  # a start takes milliseconds: a parent this slow is replaced
RESPAWN_PAUSE_S = 30.0  # after three failed starts in a row, before the next try
BUSY_WAIT_S = 0.05  # how long a job waits for a busy parent before it starts cold
VENV_INSIDE = "/opt/venv"
# The standard library modules most jobs import, imported once in every parent.
STDLIB_PRELOAD = (
    "json",
    "re",
    "math",
    "random",
    "datetime",
    "decimal",
    "fractions",
    "statistics",
    "collections",
    "itertools",
    "functools",
    "dataclasses",
    "typing",
    "pathlib",
    "csv",
    "io",
    "base64",
    "hashlib",
    "textwrap",
    "string",
    "time",
    "copy",
    "pprint",
    "enum",
    "uuid",
    "subprocess",
    "tempfile",
    "threading",
    "traceback",
)
_SECCOMP_NOT_SET = b""


class ParentGone(Exception):
    """A parent did not answer as it should: it is replaced and the job runs cold."""


@dataclass(frozen=True, slots=True)
class Layout:
    """What every parent's root holds (the cold sandbox's view), and what each job mounts."""

    binds: tuple[tuple[str, str, bool, bool], ...]  # (host source, target, writable, recursive)
    links: tuple[tuple[str, str], ...]  # (path, link target)
    directories: tuple[str, ...]  # made empty in the root (mount points)
    env: Mapping[str, str]  # the parents' environment (the jobs get their own)
    workspace_root: str
    tmp_bytes: int
    proc_read_only: tuple[str, ...]
    proc_empty_files: tuple[str, ...]
    proc_empty_dirs: tuple[str, ...]
    hostname: str


class Parent:
    """One running parent: its process and socket, how many jobs it started."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        sock: socket.socket,
        environment: str,
        imported: Sequence[str],
        identity: tuple[int, int] | None,
    ) -> None:
        self.process = process
        self.sock = sock
        self.environment = environment
        self.imported = tuple(imported)
        self.identity = identity  # its environment directory's (device, inode)
        self.started = 0
        self.lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, uid_index: int, fds: Sequence[int], stdin: bool) -> int:
        """The pid of a new job leader (the server's child), or ``ParentGone``."""
        request = json.dumps({"uid": uid_index, "stdin": stdin}).encode()
        pid: int | None = None
        try:
            socket.send_fds(self.sock, [request], list(fds))
            kind, payload = self._receive()
            if kind == b"P":
                pid = int(payload)
                kind, payload = self._receive()
            if kind != b"K":
                raise ParentGone(f"warm parent {self.pid}: {payload}")
        except (OSError, ValueError) as exc:
            raise ParentGone(f"warm parent {self.pid}: {exc}") from exc
        except ParentGone:
            if pid is not None:  # cloned, then not let go: it is ours to end
                _kill_and_reap(pid)
            raise
        finally:
            self.started += 1
        assert pid is not None
        return pid

    def _receive(self) -> tuple[bytes, Any]:
        message = self.sock.recv(65536)
        if not message:
            raise ParentGone(f"warm parent {self.pid} closed its socket")
        return message[:1], json.loads(message[1:])

    def rss_bytes(self) -> int:
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Close its socket (it exits) and reap it; SIGKILL after a second."""
        with contextlib.suppress(OSError):
            self.sock.close()
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.waitpid(pid, 0)


def spawn_parent(
    layout: Layout,
    python: str,
    venv: Path | None,
    preload: Sequence[str],
    uids: tuple[int, int],
    seccomp: bytes,
) -> Parent:
    """Start a parent for ``python`` (its path inside the sandbox) and wait until it serves.
    ``uids``: (first host uid, count) its namespace maps. ``ExecutionError`` when it fails."""
    binds = list(layout.binds)
    identity = None
    if venv is not None:
        binds.append((str(venv), VENV_INSIDE, False, True))
        stat = os.stat(venv)
        identity = (stat.st_dev, stat.st_ino)
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    config = {
        "sock": child_end.fileno(),
        "server_pid": os.getpid(),
        "binds": binds,
        "links": layout.links,
        "directories": [*layout.directories, *([VENV_INSIDE] if venv is not None else [])],
        "env": dict(layout.env),
        "hostname": layout.hostname,
        "python": python,
        "preload": list(preload),
        "seccomp": seccomp.hex(),
        "source": SOURCE,
    }
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", SOURCE, zygote.STARTING, json.dumps(config)],
            pass_fds=(child_end.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={},
            cwd="/",
            start_new_session=True,
        )
    except OSError as exc:
        parent_end.close()
        raise ExecutionError(f"cannot start a warm parent: {exc.strerror or exc}") from exc
    finally:
        child_end.close()
    label = python if venv is None else venv.name
    parent = Parent(process, parent_end, label, (), identity)
    try:
        parent_end.settimeout(START_TIMEOUT_S)
        kind, payload = parent._receive()
        if kind == b"M":
            first, count = uids
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{process.pid}/{name}", "w") as handle:
                    handle.write(f"0 {first} {count}\n")
            parent_end.send(b"ok")
            kind, payload = parent._receive()
        if kind != b"R":
            raise ExecutionError(f"a warm parent failed to start: {payload}")
        parent.imported = tuple(payload["imported"])
        if payload["failed"]:
            logger.info("warm parent %d: not imported: %s", process.pid, payload["failed"])
        parent_end.settimeout(REQUEST_TIMEOUT_S)
    except (OSError, ValueError, ParentGone) as exc:
        parent.stop()
        raise ExecutionError(f"a warm parent failed to start: {exc}") from exc
    except BaseException:
        parent.stop()
        raise
    return parent


@dataclass
class _Slots:
    """The parents of one environment."""

    python: str  # the interpreter's path inside the sandbox
    venv: Path | None
    preload: tuple[str, ...]  # modules its parents import
    parents: list[Parent | None]
    starting: set[int] = field(default_factory=set)
    failures: int = 0
    paused_until: float = 0.0
    turn: int = 0


class WarmPool:
    """Parents per (interpreter, environment), started in the background, replaced when they
    die or have started ``recycle_after`` jobs."""

    def __init__(
        self,
        layout: Layout,
        uids: tuple[int, int],
        seccomp: bytes | None,
        size: int,
        recycle_after: int,
    ) -> None:
        self.layout = layout
        self.uids = uids  # (first host uid, count): the parents' namespace maps them
        self.seccomp = seccomp or _SECCOMP_NOT_SET
        self.size = size
        self.recycle_after = recycle_after
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._slots: dict[str, _Slots] = {}
        self._closed = False
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-pool")
        # Each job's leader gets the read end: it reads as closed once this process is gone.
        self.lifeline, self._lifeline_w = os.pipe()

    def warm_up(self, python: str, venv: Path | None = None) -> None:
        """Start the parents of ``python`` (its path inside the sandbox) in the background."""
        self._ensure(python, venv)

    def _ensure(self, python: str, venv: Path | None) -> _Slots:
        key = f"{python}|{venv or ''}"
        with self._lock:
            slots = self._slots.get(key)
            if slots is None:
                if venv is not None:  # one environment at a time: a newer default replaces it
                    for old in [k for k, s in self._slots.items() if s.venv is not None]:
                        self._retire_all(self._slots.pop(old))
                preload: tuple[str, ...] = STDLIB_PRELOAD
                if venv is not None:
                    preload = (*preload, *_import_names(venv))
                slots = _Slots(python, venv, preload, [None] * self.size)
                self._slots[key] = slots
                for index in range(self.size):
                    self._schedule(key, slots, index)
            return slots

    def _schedule(self, key: str, slots: _Slots, index: int) -> None:
        """Start a parent in slot ``index`` in the background (the lock is held)."""
        if self._closed or index in slots.starting:
            return
        slots.starting.add(index)
        self._spawner.submit(self._fill, key, slots, index)

    def _fill(self, key: str, slots: _Slots, index: int) -> None:
        delay = slots.paused_until - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, RESPAWN_PAUSE_S))
        try:
            parent = spawn_parent(
                self.layout, slots.python, slots.venv, slots.preload, self.uids, self.seccomp
            )
        except (ExecutionError, OSError) as exc:
            logger.warning("warm pool (%s): %s", key, exc)
            with self._lock:
                slots.starting.discard(index)
                slots.failures += 1
                if slots.failures >= 3:
                    slots.paused_until = time.monotonic() + RESPAWN_PAUSE_S
                if self._slots.get(key) is slots:
                    self._schedule(key, slots, index)
            return
        with self._lock:
            slots.starting.discard(index)
            slots.failures = 0
            if self._closed or self._slots.get(key) is not slots:
                retired: Parent | None = parent
            else:
                retired, slots.parents[index] = slots.parents[index], parent
        if retired is not None:
            retired.stop()
        logger.debug("warm parent %d ready (%s)", parent.pid, key)

    def _retire_all(self, slots: _Slots) -> None:
        for index, parent in enumerate(slots.parents):
            if parent is not None:
                slots.parents[index] = None
                _stop_soon(parent)

    def launch(
        self, python: str, venv: Path | None, uid: int, fds: Sequence[int], stdin: bool
    ) -> int | None:
        """A job's leader pid from a parent of this interpreter and environment, or None (a
        miss: the job runs cold)."""
        slots = self._ensure(python, venv)
        pid = self._launch(f"{python}|{venv or ''}", slots, uid, fds, stdin)
        self.count(hit=pid is not None)
        return pid

    def count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def _launch(
        self, key: str, slots: _Slots, uid: int, fds: Sequence[int], stdin: bool
    ) -> int | None:
        count = len(slots.parents)
        # A free parent first; else wait a little for a busy one (a start takes a few ms, a
        # cold launch tens): under load every parent is starting a job now and then.
        give_up = time.monotonic() + BUSY_WAIT_S
        for step in range(2 * count):
            index = (slots.turn + step) % count
            parent = slots.parents[index]
            if parent is None:
                continue
            wait_s = give_up - time.monotonic() if step >= count else 0.0
            if not _take(parent.lock, wait_s):
                continue
            try:
                if slots.venv is not None and not _same_directory(slots.venv, parent.identity):
                    self._replace(key, slots, index, parent)  # rebuilt under the same name
                    return None
                try:
                    pid = parent.start(uid - self.uids[0], fds, stdin)
                except ParentGone as exc:
                    logger.warning("%s; replacing it", exc)
                    self._replace(key, slots, index, parent)
                    continue
                slots.turn = index + 1
                if parent.started >= self.recycle_after:
                    self._replace(key, slots, index, parent)
                return pid
            finally:
                parent.lock.release()
        return None

    def _replace(self, key: str, slots: _Slots, index: int, parent: Parent) -> None:
        with self._lock:
            if slots.parents[index] is parent:
                slots.parents[index] = None
            self._schedule(key, slots, index)
        _stop_soon(parent)

    def parents(self) -> list[Parent]:
        with self._lock:
            return [p for s in self._slots.values() for p in s.parents if p is not None]

    def describe(self) -> dict[str, Any]:
        return {
            "parent_uid": self.uids[0],
            "parents_per_environment": self.size,
            "recycle_after_jobs": self.recycle_after,
            "parents": len(self.parents()),
        }

    def close(self) -> None:
        with self._lock:
            self._closed = True
            everything = [p for s in self._slots.values() for p in s.parents if p is not None]
            self._slots.clear()
        self._spawner.shutdown(wait=True, cancel_futures=True)
        for parent in everything:
            parent.stop()
        for fd in (self.lifeline, self._lifeline_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def supported() -> bool:
    """Whether this machine's architecture has the calls a parent makes (their numbers)."""
    return zygote.supported()


def _take(lock: threading.Lock, wait_s: float) -> bool:
    return lock.acquire(timeout=wait_s) if wait_s > 0 else lock.acquire(blocking=False)


def _stop_soon(parent: Parent) -> None:
    """Stop a parent in a thread of its own (it may take a second): jobs it started go on."""
    threading.Thread(target=parent.stop, name="warm-parent-stop", daemon=True).start()


def _same_directory(path: Path, identity: tuple[int, int] | None) -> bool:
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return identity == (stat.st_dev, stat.st_ino)


def _import_names(venv: Path) -> tuple[str, ...]:
    """The top-level modules an environment's packages install (the first part of each path
    their ``RECORD`` lists), to import in its parents."""
    names: list[str] = []
    for site in sorted(venv.glob("lib/python*/site-packages")):
        for record in sorted(site.glob("*.dist-info/RECORD")):
            try:
                lines = record.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                top = line.split(",", 1)[0].split("/", 1)[0]
                name = top[:-3] if top.endswith(".py") else top
                if name.isidentifier() and not name.startswith("_") and name not in names:
                    names.append(name)
    return tuple(names)


@dataclass
class WarmStart:
    """What a job needs from a parent: made by the sandbox, used by the process layer."""

    pool: WarmPool
    python: str
    venv: Path | None
    uid: int
    spec: bytes  # the job as the leader reads it: never seen by the parent
    view_fd: int
    join_files: tuple[Path, ...]

    def start(self, stdout: int, stderr: int, stdin: int | None) -> int | None:
        """The leader's pid (the server's child, already confined), or None: start it cold."""
        opened: list[int] = []
        try:
            opened.append(sealed(self.spec, "job"))
            opened.append(zygote.clone_mount(self.view_fd))
            fds = [stdout, stderr, *opened, self.pool.lifeline]
            if stdin is not None:
                fds.append(stdin)
            for path in self.join_files:
                opened.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
                fds.append(opened[-1])
            return self.pool.launch(self.python, self.venv, self.uid, fds, stdin is not None)
        except OSError as exc:
            logger.warning("warm start not possible: %s", exc)
            self.pool.count(hit=False)
            return None
        finally:
            for fd in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)
