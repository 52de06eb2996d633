"""What the runner asks of a sandbox, and what the process layer drives while a job runs.

A ``Sandbox`` turns a job's command into a confined one (``prepare``) and cleans up after it
(``release``, ``recover``). Its ``Confinement`` is what the process layer needs to hold a process
tree: the files the process writes itself into before it runs anything, rlimits to apply while
it waits (``admit``), signal or kill everything in it, and read what all of it used.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import resource
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from interpreter.errors import ExecutionError
from interpreter.limits import ResourceLimits
from interpreter.metrics import WarmStats
from interpreter.sandbox.cgroupfs import CgroupUsage, JobCgroup

__all__ = [
    "GATE",
    "CgroupConfinement",
    "CgroupUsage",
    "Confinement",
    "gated",
    "NoSandbox",
    "Prepared",
    "Sandbox",
    "SandboxJob",
    "WarmLaunch",
    "WarmStats",
    "WorkspaceMeter",
    "over_limit",
    "sealed",
]

MiB = 2**20
# The process layer's gate, run as ``GATE + (join files..., "--", command...)``: a tiny shell that
# writes itself into its cgroup (``0`` to each join file), waits for a line on its stdin (sent
# once the rlimits are applied), then becomes the command with stdin from /dev/null (or from
# the job's own stdin, a descriptor the gate was given: ``gated(stdin_fd=)``)
# and nothing of its own in the environment (dash exports PWD). If it cannot join it says so on
# stderr ("gate: ...") and exits 125 before anything of the job runs.
_GATE_JOIN = (
    'while [ "$#" -gt 0 ] && [ "$1" != -- ]; do'
    ' echo 0 2>/dev/null > "$1" || { echo "gate: cannot join cgroup $1" >&2; exit 125; }; shift;'
    " done; shift; "
    'read -r _ || exit 125; unset PWD; exec "$@" '
)
GATE_SCRIPT = _GATE_JOIN + "</dev/null"
GATE = ("/bin/sh", "-c", GATE_SCRIPT, "gate")
GATE_FAILURE_EXIT = 125


def gated(
    join_files: tuple[Path, ...], argv: tuple[str, ...], stdin_fd: int | None = None
) -> list[str]:
    """The command line that starts ``argv`` behind the gate; its stdin the file open as
    ``stdin_fd`` (opened again by its /proc name: dash redirects only descriptors 0-9), else
    /dev/null."""
    script = GATE_SCRIPT if stdin_fd is None else f"{_GATE_JOIN}</proc/self/fd/{stdin_fd}"
    return ["/bin/sh", "-c", script, "gate", *map(str, join_files), "--", *argv]


def sealed(data: bytes, name: str) -> int:
    """A sealed in-memory file holding ``data``, opened read-only at its start: a job reads it
    to its end and cannot change it (its stdin; a warm job's description). ``OSError``."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE,
        )
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(fd)


ExitStatus = tuple[int | None, int | None]  # (exit code, signal): one of them is None


class Confinement(Protocol):
    """A job's cgroup and rlimits, as the process layer drives them."""

    cpu_limit_s: float | None  # the cgroup's CPU time at which the job is killed
    join_files: tuple[Path, ...]  # the gate writes itself into these

    def admit(self, pid: int) -> None:
        """Apply the rlimits to the gate ``pid``, before it runs the job's command."""

    def signal(self, sig: int, spare: Collection[int] = ()) -> None:
        """Send ``sig`` to every process of the job but ``spare``."""

    def kill_all(self) -> None:
        """SIGKILL every process of the job, daemons included (may block briefly)."""

    def occupied(self) -> bool:
        """Whether any process of the job is left (one small read)."""

    def usage(self) -> CgroupUsage: ...


@dataclass(frozen=True, slots=True)
class SandboxJob:
    """What the runner knows of a job when it asks the sandbox to confine it."""

    job_id: str
    language: str
    argv: tuple[str, ...]
    cwd: Path  # the working directory's path, as the job sees it (its path on the host)
    env: Mapping[str, str]  # the job's own environment (TMPDIR=/tmp with a private /tmp)
    limits: ResourceLimits
    # The working directory, opened by the runner beneath the workspace root without following
    # a symlink: what the sandbox binds (never ``cwd`` itself, which a job could swap).
    cwd_fd: int | None = None
    cwd_shared: bool = False  # a named directory, which other jobs may use too
    cwd_inputs: bool = False  # input files written there for it (by the server: not its uid's)
    code: tuple[str, bytes] | None = None  # (path in the sandbox, content): ``code_dir`` only
    # A package environment (the server's, never a job's to change), bound read-only at
    # ``venv_dir``
    venv: Path | None = None
    # The job may be forked from a warm parent (a Python job in the plain interpreter or the
    # default environment, never in packages a caller chose)
    warm: bool = False
    # Host directories bound read-write where the job sees them (a session kernel's socket
    # directory): (host directory, path in the sandbox). Without a sandbox the job uses the host
    # path itself.
    binds: tuple[tuple[Path, str], ...] = ()


class WarmLaunch(Protocol):
    """A job a warm parent may start instead of the spawn of ``Prepared.argv``."""

    def start(self, stdout: int, stderr: int, stdin: int | None) -> int | None:
        """The pid of the job's leader, a child of this process already in its cgroup with its
        rlimits; None when no parent could start it (then spawn it cold)."""


class WorkspaceMeter(Protocol):
    """The filesystem a job's working directory is while it runs, capped by the kernel."""

    @property
    def limit_bytes(self) -> int: ...

    @property
    def limit_files(self) -> int: ...

    def used(self) -> tuple[int, int]:
        """(bytes, files) the job has written there so far: one statvfs."""


FULL_MARGIN_BYTES = MiB


def over_limit(meter: WorkspaceMeter) -> bool:
    """Whether the job reached its limit of bytes or files. Its filesystem holds the limit (and
    refuses more with ENOSPC); a write is refused whole when it does not fit, so a job that
    left less than a MiB (an eighth of a small limit) free counts as having reached it."""
    used_bytes, used_files = meter.used()
    margin = min(FULL_MARGIN_BYTES, meter.limit_bytes // 8)
    return used_bytes >= meter.limit_bytes - margin or used_files >= meter.limit_files


@dataclass(frozen=True, slots=True)
class Prepared:
    """The confined command: what to spawn, with what environment, held by what."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    confinement: Confinement | None = None
    pass_fds: tuple[int, ...] = ()  # open for the spawned process (seccomp program, binds)
    cleanup: object = field(default=None, repr=False)  # what the sandbox releases after
    spawn_cwd: Path | None = None  # where the spawned process starts (None: the job's cwd)
    uid: int | None = None  # the host uid the job runs as (None: the server's)
    # Where the host sees the job's directory as the job does while it runs (file tracking walks
    # it); None: the directory itself.
    view_fd: int | None = None
    workspace: WorkspaceMeter | None = None  # its disk limit, enforced by the kernel
    warm: WarmLaunch | None = None  # a warm parent may start it instead


class Sandbox(Protocol):
    name: str  # "bwrap" or "none"
    private_tmp: bool  # the job gets a /tmp of its own: no host TMPDIR to create
    code_dir: str | None  # where the job's code file goes inside it (None: a host file)
    venv_dir: str | None  # where a job sees its package environment (None: at its host path)

    def prepare(self, job: SandboxJob) -> Prepared:
        """The confined command; ``ExecutionError`` if the confinement cannot be set up."""

    def collect(self, prepared: Prepared) -> str | None:
        """After the job, before its result is told: put what it wrote where it lasts
        (blocking: run it in a thread; the job's directory descriptor stays open until it
        returns). Returns why what it wrote was not kept, when it was not."""

    def release(self, prepared: Prepared) -> None:
        """After the job: let go of what ``prepare`` made (never blocks)."""

    def recover(self, job_ids: Collection[str]) -> None:
        """At start: kill and remove what jobs of a crashed server left (blocking)."""

    def decode_exit(self, exit_code: int | None, signal: int | None) -> ExitStatus:
        """The job's own (exit code, signal) from what the spawned process reported."""

    def setup_failure(self, exit_code: int | None, stderr: Path) -> str | None:
        """Why the sandbox failed to start the job, if that is what the outcome shows."""

    def describe(self) -> dict[str, Any]:
        """What it guarantees, for ``GET /sandbox`` and the log at start."""

    def warm_up(self, python: str, venv: Path | None = None) -> None:
        """Start warm parents for Python jobs run by ``python`` (its path as jobs see it) in
        the package environment ``venv``, in the background."""

    def warm_stats(self) -> WarmStats | None:
        """What the warm pool did and holds (None: no pool)."""

    def close(self) -> None: ...


class NoSandbox:
    """Jobs run as the server's user with its view of the machine: trusted local use only."""

    name = "none"
    private_tmp = False
    code_dir: str | None = None
    venv_dir: str | None = None

    def prepare(self, job: SandboxJob) -> Prepared:
        return Prepared(argv=job.argv, env=job.env)

    def collect(self, prepared: Prepared) -> str | None:
        return None

    def release(self, prepared: Prepared) -> None:
        pass

    def recover(self, job_ids: Collection[str]) -> None:
        pass

    def decode_exit(self, exit_code: int | None, signal: int | None) -> ExitStatus:
        return exit_code, signal

    def setup_failure(self, exit_code: int | None, stderr: Path) -> str | None:
        return None

    def warm_up(self, python: str, venv: Path | None = None) -> None:
        pass

    def warm_stats(self) -> WarmStats | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "none",
            "isolated": False,
            "limits_enforced": False,
            "warning": "INTERPRETER_SANDBOX=none: jobs run without a sandbox, as the server's "
            "user, with its files, network and processes in reach; only wall time and output "
            "size are limited. Use it only for code you would run yourself.",
        }

    def close(self) -> None:
        pass


class CgroupConfinement:
    """A job's cgroup plus the rlimits of the process that starts it (inherited by all)."""

    def __init__(self, cgroup: JobCgroup, limits: ResourceLimits, python: bool) -> None:
        self.cgroup = cgroup
        self.join_files = cgroup.join_files
        self.cpu_limit_s: float | None = limits.cpu_time_s
        cpu_s = math.ceil(limits.cpu_time_s)
        self.rlimits: list[tuple[int, tuple[int, int]]] = [
            (resource.RLIMIT_CPU, (cpu_s, cpu_s + 1)),  # SIGXCPU, then SIGKILL a second later
            (resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes)),
            (resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files)),
            (resource.RLIMIT_CORE, (0, 0)),
        ]
        if python:  # one huge allocation raises a catchable MemoryError; growth meets the cgroup
            space = max(2 * limits.memory_bytes, limits.memory_bytes + 256 * MiB)
            self.rlimits.append((resource.RLIMIT_AS, (space, space)))

    def admit(self, pid: int) -> None:
        for which, values in self.rlimits:
            try:
                resource.prlimit(pid, which, values)
            except (OSError, ValueError) as exc:
                raise ExecutionError(f"cannot set rlimit {which} of process {pid}: {exc}") from exc

    def signal(self, sig: int, spare: Collection[int] = ()) -> None:
        with contextlib.suppress(OSError):
            self.cgroup.signal(sig, spare)

    def kill_all(self) -> None:
        self.cgroup.kill_all()

    def occupied(self) -> bool:
        try:
            return bool(self.cgroup.pids())
        except OSError:
            return False

    def usage(self) -> CgroupUsage:
        return self.cgroup.usage()
