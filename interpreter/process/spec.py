"""What to start and what came of it: the values that pass between the runner and ``run``.

A ``ProcessSpec`` says what to start (argv, working directory, environment, limits, where output
goes, the sandbox's confinement); a ``ProcessOutcome`` says how it ended, what it wrote and what
it used. Plain frozen values: nothing here starts or watches a process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from interpreter.process.filetrack import ScanLimits
from interpreter.process.orphans import OrphanMarks
from interpreter.sandbox.base import CgroupUsage, Confinement, WarmLaunch, WorkspaceMeter

# Told of each piece of output as it reaches its file: (stream, offset in the file, bytes).
OutputListener = Callable[[str, int, bytes], None]

# How a process ended, as seen by its supervision.
Termination = Literal["exit", "timeout", "cancelled", "cpu_limit", "workspace_limit"]


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
    confinement: Confinement | None = None  # the sandbox's cgroup: holds the whole tree
    workspace: WorkspaceMeter | None = None  # the kernel-capped filesystem cwd is (sandbox)
    pass_fds: tuple[int, ...] = ()  # kept open for the process (the caller closes its own)
    cwd_fd: int | None = None  # cwd as the job sees it, opened by the caller: what tracking walks
    spawn_cwd: Path | None = None  # where the process starts, if not in cwd (the sandbox: /)
    # Nothing takes this job down with us (no sandbox): the watcher of ``orphans.GUARD`` will
    orphan_marks: OrphanMarks | None = None
    stdin: bytes | None = None  # what the process reads on stdin (None: /dev/null)
    # Told of the output's head as it arrives (a live stream follows it); see output.StreamCapture
    on_output: OutputListener | None = None
    warm: WarmLaunch | None = None  # a warm parent may start it (confined only)


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
    peak_rss_bytes: int  # the cgroup's peak, or the largest process of the tree (see _Child)
    peak_vms_bytes: int | None  # sampled while running; None if it ended before a sample or
    # when confined (the cgroup keeps no such figure)
    cpu_total_s: float | None = None  # the cgroup's exact total (user + system are by ticks)


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
    confined: CgroupUsage | None = None  # what the whole cgroup used, when confined
