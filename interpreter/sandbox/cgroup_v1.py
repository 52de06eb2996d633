"""cgroup v1: a directory per job in each of the memory, pids, cpuacct and freezer hierarchies."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from interpreter.errors import ConfigurationError, ExecutionError
from interpreter.limits import ResourceLimits
from interpreter.sandbox import cgroupfs
from interpreter.sandbox.cgroupfs import CgroupDriver, CgroupUsage, JobCgroup

REQUIRED = ("memory", "pids")
OPTIONAL = ("cpuacct", "freezer")


class V1JobCgroup(JobCgroup):
    def __init__(self, name: str, dirs: dict[str, Path], memsw: bool) -> None:
        self.name = name
        self.dirs = dirs  # controller -> directory
        self.memsw = memsw

    @property
    def procs_files(self) -> tuple[Path, ...]:
        return tuple(d / "cgroup.procs" for d in self.dirs.values())

    @property
    def join_files(self) -> tuple[Path, ...]:
        return tuple(d / "tasks" for d in self.dirs.values())

    def directories(self) -> tuple[Path, ...]:
        return tuple(self.dirs.values())

    def pids(self) -> list[int]:
        return cgroupfs.pids(self.dirs["pids"] / "cgroup.procs")

    def usage(self) -> CgroupUsage:
        memory = self.dirs["memory"]
        oom = cgroupfs.keyed(cgroupfs.read(memory / "memory.oom_control")).get("oom_kill", 0)
        peak = int(cgroupfs.read(memory / "memory.max_usage_in_bytes"))
        user_s = system_s = total_s = 0.0
        if cpuacct := self.dirs.get("cpuacct"):
            user_s = int(cgroupfs.read(cpuacct / "cpuacct.usage_user")) / 1e9
            system_s = int(cgroupfs.read(cpuacct / "cpuacct.usage_sys")) / 1e9
            total_s = int(cgroupfs.read(cpuacct / "cpuacct.usage")) / 1e9
        return CgroupUsage(user_s, system_s, total_s, peak, oom)

    def kill_all(self) -> None:
        if not self.pids():
            return
        freezer = self.dirs.get("freezer")
        if freezer is not None:  # frozen, nothing can fork; the SIGKILLs land at the thaw
            cgroupfs.write(freezer / "freezer.state", "FROZEN")
            deadline = time.monotonic() + 1.0
            while cgroupfs.read(freezer / "freezer.state").strip() != "FROZEN":
                if time.monotonic() > deadline:
                    break
                time.sleep(cgroupfs.SETTLE_S)
            cgroupfs.kill(cgroupfs.pids(freezer / "cgroup.procs"), signal.SIGKILL)
            cgroupfs.write(freezer / "freezer.state", "THAWED")
        self._kill_rounds()


class CgroupV1(CgroupDriver):
    version = 1

    def __init__(self, parents: dict[str, Path]) -> None:
        """``parents``: the jobs' parent directory in each controller's hierarchy."""
        missing = [c for c in REQUIRED if c not in parents]
        if missing:
            raise ConfigurationError(f"cgroup v1 controller(s) not mounted: {', '.join(missing)}")
        self.parents = parents
        self.memsw = False

    @property
    def parent(self) -> Path:
        return self.parents["pids"]

    def describe(self) -> str:
        return "cgroup v1, jobs under " + ", ".join(str(p) for p in self.parents.values())

    def setup(self) -> None:
        for controller, parent in self.parents.items():
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot create the jobs' {controller} cgroup {parent}: {exc}"
                ) from exc
        self.memsw = (self.parents["memory"] / "memory.memsw.limit_in_bytes").exists()

    def open(self, name: str) -> V1JobCgroup:
        dirs = {controller: parent / name for controller, parent in self.parents.items()}
        return V1JobCgroup(name, dirs, self.memsw)

    def create(self, name: str, limits: ResourceLimits) -> V1JobCgroup:
        cgroup = self.open(name)
        try:
            for directory in cgroup.dirs.values():
                directory.mkdir()
            memory = cgroup.dirs["memory"]
            cgroupfs.write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
            if self.memsw:  # memory + swap = memory: no swap
                cgroupfs.write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
            cgroupfs.write(cgroup.dirs["pids"] / "pids.max", str(limits.processes))
        except OSError as exc:
            cgroup.remove()
            raise ExecutionError(f"cannot create the cgroups of job {name}: {exc}") from exc
        return cgroup
