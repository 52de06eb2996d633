"""The cgroupfs basics shared by both versions: a job's cgroup, a driver, file helpers."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from interpreter.errors import ExecutionError
from interpreter.limits import ResourceLimits

logger = logging.getLogger(__name__)

KILL_ROUNDS = 50
SETTLE_S = 0.005


@dataclass(frozen=True, slots=True)
class CgroupUsage:
    """What a job's processes used, all of them, from the kernel's accounting."""

    cpu_user_s: float
    cpu_system_s: float
    cpu_total_s: float  # exact (the scheduler's), where user + system are sampled by ticks
    peak_memory_bytes: int | None  # None when the kernel keeps no peak and none was sampled
    oom_kills: int  # processes the OOM killer killed in this cgroup


# -- small file helpers (cgroupfs files are tiny; the fake trees of the tests are plain files) --
def write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def read(path: Path) -> str:
    with open(path) as handle:
        return handle.read()


def keyed(text: str) -> dict[str, int]:
    """``"oom_kill 3\\nunder_oom 0"`` -> ``{"oom_kill": 3, "under_oom": 0}``."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            found[key] = int(value)
    return found


def pids(procs: Path) -> list[int]:
    try:
        return [int(line) for line in read(procs).split()]
    except FileNotFoundError:
        return []


def kill(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class JobCgroup(ABC):
    """The cgroup(s) of one job: join, account, kill everything, remove."""

    name: str

    @property
    @abstractmethod
    def procs_files(self) -> tuple[Path, ...]:
        """Where a pid is written to move a process in (one file per v1 hierarchy)."""

    @property
    @abstractmethod
    def join_files(self) -> tuple[Path, ...]:
        """Where a process writes ``0`` to move itself in. On v1 that is ``tasks``: a thread
        moving itself skips the kernel's global threadgroup lock, whose writer side waits for
        an RCU grace period (several ms when cgroups have been quiet) on ``cgroup.procs``."""

    @abstractmethod
    def pids(self) -> list[int]:
        """The processes in the cgroup now."""

    @abstractmethod
    def usage(self) -> CgroupUsage: ...

    @abstractmethod
    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, forks racing with it included."""

    @abstractmethod
    def directories(self) -> tuple[Path, ...]: ...

    def attach(self, pid: int) -> None:
        """Move ``pid`` in; ``ExecutionError`` if the kernel refuses."""
        data = str(pid)
        for procs in self.procs_files:
            try:
                write(procs, data)
            except OSError as exc:
                raise ExecutionError(f"cannot move process {pid} into {procs}: {exc}") from exc

    def signal(self, sig: int, spare: Collection[int] = ()) -> None:
        """Send ``sig`` to every process in the cgroup but ``spare``."""
        kill((pid for pid in self.pids() if pid not in spare), sig)

    def _kill_rounds(self) -> None:
        """SIGKILL what is listed until nothing is (a fork may land between read and kill)."""
        for _ in range(KILL_ROUNDS):
            pids = self.pids()
            if not pids:
                return
            kill(pids, signal.SIGKILL)
            time.sleep(SETTLE_S)
        logger.warning("cgroup %s still has processes after %d kill rounds", self.name, KILL_ROUNDS)

    def remove(self) -> bool:
        """rmdir every directory; False while the kernel still says busy (try again later)."""
        done = True
        for directory in self.directories():
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                done = False
        return done


class CgroupDriver(ABC):
    """One cgroup version on this host: set up the parent once, then a cgroup per job."""

    version: int

    @abstractmethod
    def setup(self) -> None:
        """Create the parent and enable what jobs need; ``ConfigurationError`` if impossible."""

    @abstractmethod
    def create(self, name: str, limits: ResourceLimits) -> JobCgroup:
        """A fresh cgroup with ``limits``; ``ExecutionError`` if it cannot be made."""

    @abstractmethod
    def open(self, name: str) -> JobCgroup:
        """The cgroup ``name`` as it is (it may not exist): to clean up after a crash."""

    @abstractmethod
    def describe(self) -> str: ...

    @property
    @abstractmethod
    def parent(self) -> Path:
        """The directory jobs' cgroups are made in (v1: the pids hierarchy's)."""

    def stale(self, older_than_s: float) -> list[JobCgroup]:
        """Jobs' cgroups with no process, made more than ``older_than_s`` ago: left by a server
        that died before removing them (a live job's cgroup is empty only for moments)."""
        found: list[JobCgroup] = []
        cutoff = time.time() - older_than_s
        try:
            entries = list(os.scandir(self.parent))
        except OSError:
            return found
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    cgroup = self.open(entry.name)
                    if not cgroup.pids():
                        found.append(cgroup)
            except OSError:
                continue
        return found
