"""A fresh cgroup per job, on cgroup v1 or v2, whichever the host has.

Every job gets cgroups of its own under a parent that the server sets up at start:

- **v2** (``/sys/fs/cgroup/cgroup.controllers`` lists ``memory`` and ``pids``): one directory,
  ``<parent>/<job id>``, with ``memory.max``, ``memory.swap.max = 0``, ``memory.oom.group = 1``
  and ``pids.max``. The parent is ``<the server's own cgroup>/interpreter-jobs``; the server
  enables ``+memory +pids`` in its own cgroup's ``cgroup.subtree_control``. The kernel refuses
  that while the server's cgroup holds processes (v2's "no internal processes" rule) unless it
  is the root; if the server is the only process there (a container, a systemd unit with
  ``Delegate=yes``) it first moves itself into ``<own>/interpreter-server``.
- **v1** (a hierarchy per controller, e.g. ``/sys/fs/cgroup/memory``): one directory per
  controller, ``<controller mount>/<own path>/interpreter-jobs/<job id>``, for ``memory``
  (``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``: no swap), ``pids``
  (``pids.max``), and, when mounted, ``cpuacct`` (CPU time) and ``freezer`` (a race-free kill).
  The parent sits under the server's own cgroup of each hierarchy, so that jobs count against
  whatever limit the server itself runs under, and v1 allows cgroups with processes to have
  children.

``INTERPRETER_CGROUP_PARENT`` names another parent (a cgroup path as in ``/proc/self/cgroup``).

A job's cgroup is removed after the job by a ``Remover`` thread, off the path between the job's
exit and its final status, retrying while the kernel still says EBUSY (charges of the last
processes are released a moment after they are reaped).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from interpreter.errors import ConfigurationError
from interpreter.sandbox import cgroup_v1, cgroup_v2
from interpreter.sandbox.cgroup_v1 import CgroupV1
from interpreter.sandbox.cgroup_v2 import CgroupV2
from interpreter.sandbox.cgroupfs import CgroupDriver, CgroupUsage, JobCgroup, read

__all__ = [
    "CgroupDriver",
    "CgroupUsage",
    "CgroupV1",
    "CgroupV2",
    "JobCgroup",
    "Remover",
    "detect",
]

logger = logging.getLogger(__name__)

PARENT_NAME = "interpreter-jobs"


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` -> controller -> path; ``""`` is the v2 hierarchy."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            found[controller] = path
    return found


@dataclass(frozen=True, slots=True)
class Mount:
    point: Path
    root: str  # the hierarchy's path mounted there ("/" unless a subtree is bind-mounted)


def parse_mountinfo(text: str) -> tuple[dict[str, Mount], Mount | None]:
    """``/proc/self/mountinfo`` -> (v1 controller -> mount, the cgroup2 mount or None)."""
    v1: dict[str, Mount] = {}
    v2: Mount | None = None
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        fields, extra = head.split(), tail.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        mount = Mount(Path(fields[4].replace("\\040", " ")), fields[3])
        if extra[0] == "cgroup2" and v2 is None:
            v2 = mount
        elif extra[0] == "cgroup":
            for option in extra[2].split(","):
                v1.setdefault(option, mount)
    return v1, v2


def _inside(mount: Mount, path: str) -> Path:
    """The directory of cgroup ``path`` under ``mount``."""
    relative = os.path.relpath(path, mount.root) if mount.root != "/" else path.lstrip("/")
    if relative.startswith(".."):
        raise ConfigurationError(f"cgroup {path} is not visible under {mount.point}")
    return mount.point / relative if relative != "." else mount.point


def detect(parent: str | None = None, proc: Path = Path("/proc/self")) -> CgroupDriver:
    """The driver for this host: v2 when its hierarchy has memory and pids, else v1."""
    try:
        own = parse_proc_cgroup(read(proc / "cgroup"))
        v1_mounts, v2_mount = parse_mountinfo(read(proc / "mountinfo"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read this process's cgroups: {exc}") from exc
    if v2_mount is not None and "" in own:
        with contextlib.suppress(OSError):
            controllers = read(v2_mount.point / "cgroup.controllers").split()
            if set(cgroup_v2.CONTROLLERS) <= set(controllers):
                base = parent or f"{own[''].rstrip('/')}/{PARENT_NAME}"
                relative = _inside(v2_mount, base).relative_to(v2_mount.point)
                return CgroupV2(v2_mount.point, str(relative))
    parents: dict[str, Path] = {}
    for controller in (*cgroup_v1.REQUIRED, *cgroup_v1.OPTIONAL):
        mount = v1_mounts.get(controller)
        if mount is None or controller not in own:
            continue
        base = parent or f"{own[controller].rstrip('/')}/{PARENT_NAME}"
        parents[controller] = _inside(mount, base)
    if not all(c in parents for c in cgroup_v1.REQUIRED):
        raise ConfigurationError(
            "no usable cgroups: neither a cgroup v2 hierarchy with the memory and pids "
            "controllers nor cgroup v1 memory and pids hierarchies are mounted"
        )
    return CgroupV1(parents)


# -- removal, off the hot path --------------------------------------------------------------------
@dataclass(order=True, slots=True)
class _Removal:
    due: float
    seq: int
    first: float = field(compare=False)
    attempt: int = field(compare=False)
    cgroup: JobCgroup = field(compare=False)
    then: Callable[[], None] | None = field(default=None, compare=False)


class Remover:
    """A thread that removes finished jobs' cgroups, retrying while the kernel says busy, and
    then calls what waited for it (giving the job's uid back)."""

    RETRY_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
    GIVE_UP_S = 60.0

    def __init__(self) -> None:
        self._inbox: queue.Queue[tuple[JobCgroup, Callable[[], None] | None] | None] = queue.Queue()
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._run, name="cgroup-remover", daemon=True)
        self._thread.start()

    def remove(self, cgroup: JobCgroup, then: Callable[[], None] | None = None) -> None:
        """Remove ``cgroup`` soon; ``then()`` once it is gone (never if it stays busy)."""
        self._inbox.put((cgroup, then))

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after one last try of each cgroup still waiting (blocks up to ``timeout_s``)."""
        self._inbox.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        waiting: list[_Removal] = []
        while True:
            timeout = max(0.0, waiting[0].due - time.monotonic()) if waiting else None
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                pass
            else:
                if item is None:
                    for removal in waiting:
                        if self._try(removal.cgroup):
                            self._then(removal)
                        else:
                            self._give_up(removal.cgroup)
                    return
                now = time.monotonic()
                cgroup, then = item
                heapq.heappush(waiting, _Removal(now, next(self._seq), now, 0, cgroup, then))
            now = time.monotonic()
            while waiting and waiting[0].due <= now:
                removal = heapq.heappop(waiting)
                if self._try(removal.cgroup):
                    self._then(removal)
                    continue
                if now - removal.first > self.GIVE_UP_S:
                    self._give_up(removal.cgroup)
                    continue
                removal.due = now + self.RETRY_S[min(removal.attempt, len(self.RETRY_S) - 1)]
                removal.attempt += 1
                heapq.heappush(waiting, removal)

    @staticmethod
    def _then(removal: _Removal) -> None:
        if removal.then is not None:
            try:
                if not removal.cgroup.pids():  # never hand on what a live process still uses
                    removal.then()
            except Exception:
                logger.exception("after removing cgroup %s", removal.cgroup.name)

    @staticmethod
    def _give_up(cgroup: JobCgroup) -> None:
        logger.warning("cgroup %s is still busy; left in place", cgroup.name)

    @staticmethod
    def _try(cgroup: JobCgroup) -> bool:
        try:
            cgroup.kill_all()  # normally empty already: one read
            return cgroup.remove()
        except OSError as exc:
            logger.warning("cgroup %s: removal failed: %s", cgroup.name, exc)
            return True  # not worth retrying
