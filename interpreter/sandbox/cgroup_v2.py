"""cgroup v2: one directory per job with memory.max, memory.swap.max, memory.oom.group, pids.max."""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from pathlib import Path

from interpreter.errors import ConfigurationError, ExecutionError
from interpreter.limits import ResourceLimits
from interpreter.sandbox import cgroupfs
from interpreter.sandbox.cgroupfs import CgroupDriver, CgroupUsage, JobCgroup

logger = logging.getLogger(__name__)

SERVER_LEAF = "interpreter-server"
CONTROLLERS = ("memory", "pids")
ENABLE = " ".join(f"+{c}" for c in CONTROLLERS)


class V2JobCgroup(JobCgroup):
    def __init__(self, path: Path, features: frozenset[str]) -> None:
        self.path = path
        self.name = path.name
        self.features = features
        self._peak_seen = 0

    @property
    def procs_files(self) -> tuple[Path, ...]:
        return (self.path / "cgroup.procs",)

    @property
    def join_files(self) -> tuple[Path, ...]:
        return self.procs_files  # cgroup.threads needs threaded mode: the process lock it is

    def directories(self) -> tuple[Path, ...]:
        return (self.path,)

    def pids(self) -> list[int]:
        return cgroupfs.pids(self.path / "cgroup.procs")

    def usage(self) -> CgroupUsage:
        cpu = cgroupfs.keyed(cgroupfs.read(self.path / "cpu.stat"))
        peak: int | None = None
        if "memory.peak" in self.features:
            peak = int(cgroupfs.read(self.path / "memory.peak"))
        elif "memory.current" in self.features:  # sampled: a floor
            self._peak_seen = max(self._peak_seen, int(cgroupfs.read(self.path / "memory.current")))
            peak = self._peak_seen
        oom = 0
        if "memory.events" in self.features:
            oom = cgroupfs.keyed(cgroupfs.read(self.path / "memory.events")).get("oom_kill", 0)
        return CgroupUsage(
            cpu_user_s=cpu.get("user_usec", 0) / 1e6,
            cpu_system_s=cpu.get("system_usec", 0) / 1e6,
            cpu_total_s=cpu.get("usage_usec", 0) / 1e6,
            peak_memory_bytes=peak,
            oom_kills=oom,
        )

    def kill_all(self) -> None:
        if not self.pids():
            return
        if "cgroup.kill" in self.features:  # atomic, forks included (kernel 5.14)
            cgroupfs.write(self.path / "cgroup.kill", "1")
        else:
            self._freeze_and_kill()
        self._kill_rounds()  # normally nothing is left: this only waits for them to go

    def _freeze_and_kill(self) -> None:
        cgroupfs.write(self.path / "cgroup.freeze", "1")
        deadline = time.monotonic() + 1.0
        while cgroupfs.keyed(cgroupfs.read(self.path / "cgroup.events")).get("frozen") != 1:
            if time.monotonic() > deadline:
                break
            time.sleep(cgroupfs.SETTLE_S)
        cgroupfs.kill(self.pids(), signal.SIGKILL)
        cgroupfs.write(self.path / "cgroup.freeze", "0")


class CgroupV2(CgroupDriver):
    version = 2

    def __init__(self, mount: Path, parent: str) -> None:
        """``parent``: the jobs' parent cgroup, a path inside the hierarchy at ``mount``."""
        self.mount = mount
        self._parent = mount / parent.strip("/")
        self.features: frozenset[str] = frozenset()

    @property
    def parent(self) -> Path:
        return self._parent

    def describe(self) -> str:
        return f"cgroup v2, jobs under {self.parent}"

    def setup(self) -> None:
        self._enable(self.parent.parent)
        try:
            self.parent.mkdir(exist_ok=True)
            self._enable(self.parent)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the jobs' cgroup {self.parent}: {exc}"
            ) from exc
        probe = ("memory.peak", "memory.current", "memory.events", "memory.swap.max")
        found = {name for name in probe if (self.parent / name).exists()}
        found |= {
            name for name in ("memory.oom.group", "cgroup.kill") if (self.parent / name).exists()
        }
        self.features = frozenset(found)

    def _enable(self, cgroup: Path) -> None:
        """Make memory and pids available to ``cgroup``'s children."""
        wanted = set(CONTROLLERS)
        try:
            if wanted <= set(cgroupfs.read(cgroup / "cgroup.subtree_control").split()):
                return
            available = set(cgroupfs.read(cgroup / "cgroup.controllers").split())
        except OSError as exc:
            raise ConfigurationError(f"cannot read cgroup {cgroup}: {exc}") from exc
        if not wanted <= available:
            raise ConfigurationError(
                f"cgroup {cgroup} has no {', '.join(sorted(wanted - available))} controller: "
                "delegate them to the server (systemd: Delegate=yes; Docker: --cgroupns=private "
                "on a cgroup v2 host) or set INTERPRETER_CGROUP_PARENT to a cgroup that has them"
            )
        try:
            cgroupfs.write(cgroup / "cgroup.subtree_control", ENABLE)
        except OSError as exc:
            if exc.errno != errno.EBUSY or not self._leave(cgroup):
                raise ConfigurationError(
                    f"cannot enable memory and pids for the children of {cgroup}: {exc}. "
                    "cgroup v2 allows it only in a cgroup without processes of its own: run the "
                    "server as the only process of a delegated cgroup (it then moves itself "
                    f"into {SERVER_LEAF}), or set INTERPRETER_CGROUP_PARENT to an empty cgroup "
                    "with memory and pids enabled"
                ) from exc
            cgroupfs.write(cgroup / "cgroup.subtree_control", ENABLE)

    @staticmethod
    def _leave(cgroup: Path) -> bool:
        """Move this server out of ``cgroup`` into a leaf, if it is the only process there."""
        if cgroupfs.pids(cgroup / "cgroup.procs") != [os.getpid()]:
            return False
        leaf = cgroup / SERVER_LEAF
        leaf.mkdir(exist_ok=True)
        cgroupfs.write(leaf / "cgroup.procs", str(os.getpid()))
        logger.info("moved the server into %s to delegate memory and pids to jobs", leaf)
        return True

    def open(self, name: str) -> V2JobCgroup:
        return V2JobCgroup(self.parent / name, self.features)

    def create(self, name: str, limits: ResourceLimits) -> V2JobCgroup:
        cgroup = self.open(name)
        path = cgroup.path
        try:
            path.mkdir()
        except OSError as exc:
            raise ExecutionError(f"cannot create cgroup {path}: {exc}") from exc
        try:
            cgroupfs.write(path / "memory.max", str(limits.memory_bytes))
            if "memory.swap.max" in self.features:
                cgroupfs.write(path / "memory.swap.max", "0")
            if "memory.oom.group" in self.features:  # an OOM kill takes the whole job
                cgroupfs.write(path / "memory.oom.group", "1")
            cgroupfs.write(path / "pids.max", str(limits.processes))
        except OSError as exc:
            cgroup.remove()
            raise ExecutionError(f"cannot set the limits of cgroup {path}: {exc}") from exc
        return cgroup
