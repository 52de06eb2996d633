"""Kill what jobs left running when the server itself died (SIGKILL, OOM, power).

The sandbox (the default) takes a job down with the server: bubblewrap's --die-with-parent.
Without it (``INTERPRETER_SANDBOX=none``) nothing in the kernel would, so a watcher does:
``GUARD`` starts, the first time this process (a server or a worker) runs a job without a
sandbox, a small process of its own (``python -m interpreter.process.orphans``, in a session of its
own) that reads, on a pipe, which jobs run (each job's process group, which is also its
session, and its marks: its private TMPDIR and its fresh working directory). The pipe's end
closes only when this process exits: the watcher reads EOF at once and SIGKILLs every process of
ours in a job's process group or session, or carrying a job's mark (a daemon that left the job's
session keeps its environment and directory), then exits. A job that exits normally is
forgotten before its leader is reaped, so its process group id cannot name another's by then.

``kill_leftovers`` is the same kill by marks, at the next start, for what even the watcher
missed (it was killed too: the whole machine or container went down, or a group kill).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

_KILL_ROUNDS = 5  # a process forking while we kill: its child shows up in the next round
_ROUND_PAUSE_S = 0.02
_CLOSE_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class OrphanMarks:
    """How a job's processes are known once the server is gone (besides its process group)."""

    tmpdir: str | None  # its private TMPDIR, in every process's environment
    workdir: str | None  # its own fresh working directory (never a shared, named one)


def kill_leftovers(
    tmpdirs: Collection[str], workdirs: Collection[str], groups: Collection[int] = ()
) -> list[int]:
    """SIGKILL every process (of ours) whose TMPDIR or cwd is one of the given directories, or
    whose process group or session is one of ``groups``."""
    if not tmpdirs and not workdirs and not groups:
        return []
    me = os.getpid()
    uid = os.getuid()
    killed: list[int] = []
    for proc in psutil.process_iter(["pid", "uids"]):
        try:
            if proc.pid == me or proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            if (
                (groups and (os.getpgid(proc.pid) in groups or os.getsid(proc.pid) in groups))
                or (tmpdirs and proc.environ().get("TMPDIR") in tmpdirs)
                or (workdirs and proc.cwd() in workdirs)
            ):
                proc.kill()
                killed.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    if killed:
        logger.warning("killed processes left by jobs of a previous run", extra={"pids": killed})
    return killed


def kill_jobs(jobs: dict[int, OrphanMarks]) -> list[int]:
    """Kill every process of the given jobs (by leader pid), in rounds until none is left."""
    groups = set(jobs)
    tmpdirs = {marks.tmpdir for marks in jobs.values() if marks.tmpdir}
    workdirs = {marks.workdir for marks in jobs.values() if marks.workdir}
    killed: list[int] = []
    for _ in range(_KILL_ROUNDS):
        for group in groups:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
        found = kill_leftovers(tmpdirs, workdirs, groups)
        killed += found
        if not found:
            break
        time.sleep(_ROUND_PAUSE_S)
    return killed


class Guard:
    """This process's watcher (see the module's docstring): ``watch`` a job's leader once it
    runs, ``forget`` it before reaping it. Thread-safe; never raises (a job without a watcher
    still runs, and ``kill_leftovers`` still covers it at the next start)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._popen: subprocess.Popen[bytes] | None = None
        self._jobs: dict[int, OrphanMarks] = {}

    def watch(self, pid: int, marks: OrphanMarks) -> None:
        with self._lock:
            self._jobs[pid] = marks
            self._send(["+", pid, marks.tmpdir, marks.workdir])

    def forget(self, pid: int) -> None:
        with self._lock:
            if self._jobs.pop(pid, None) is not None:
                self._send(["-", pid])

    def close(self) -> None:
        """Let the watcher go, at shutdown, unless a job is still watched (another runner's, in
        this process): it then stays, to go when this process does."""
        with self._lock:
            if self._jobs:
                return
            popen, self._popen = self._popen, None
        if popen is None:
            return
        assert popen.stdin is not None
        with contextlib.suppress(OSError):
            popen.stdin.close()
        try:
            popen.wait(_CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()

    def _send(self, message: list[object]) -> None:
        popen = self._running()
        if popen is None:
            return
        try:
            _write(popen, [message])
        except OSError:  # it died just now: a new one, told everything watched
            self._discard(popen)
            self._running()

    def _discard(self, popen: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            assert popen.stdin is not None
            popen.stdin.close()
        popen.wait()
        self._popen = None

    def _running(self) -> subprocess.Popen[bytes] | None:
        """The watcher; a new one (told every job watched) if none runs."""
        if self._popen is not None:
            if self._popen.poll() is None:
                return self._popen
            logger.warning("the watcher of unsandboxed jobs exited; starting another")
            self._discard(self._popen)
        package_parent = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", "interpreter.process.orphans"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env=env,
                close_fds=True,
                start_new_session=True,  # a kill of the server's process group spares it
            )
        except OSError as exc:
            logger.error("cannot start the watcher of unsandboxed jobs: %s", exc)
            return None
        self._popen = popen
        try:
            _write(popen, [["+", pid, m.tmpdir, m.workdir] for pid, m in self._jobs.items()])
        except OSError as exc:
            logger.error("the watcher of unsandboxed jobs failed at once: %s", exc)
            self._discard(popen)
            return None
        return popen


def _write(popen: subprocess.Popen[bytes], messages: list[list[object]]) -> None:
    assert popen.stdin is not None
    if messages:
        popen.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
        popen.stdin.flush()


GUARD = Guard()


def _watch() -> None:
    """The watcher: follow the server's messages until EOF, then kill what is still watched."""
    jobs: dict[int, OrphanMarks] = {}
    for line in sys.stdin.buffer:
        try:
            message = json.loads(line)
            if message[0] == "+":
                jobs[int(message[1])] = OrphanMarks(message[2], message[3])
            else:
                jobs.pop(int(message[1]), None)
        except (ValueError, IndexError, TypeError):
            continue
    if jobs:
        killed = kill_jobs(jobs)
        print(
            f"interpreter.process.orphans: the server exited; killed {len(killed)} processes of "
            f"{len(jobs)} jobs",
            file=sys.stderr,
        )


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C reaches the server alone
    _watch()
