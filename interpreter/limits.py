"""Per-job resource limits: a server default and maximum for each, a request may ask within it.

``ResourceLimits`` is the frozen value a job runs with. ``LIMITS`` ties each limit a request may
set to its two settings (``INTERPRETER_<X>_LIMIT`` and ``INTERPRETER_MAX_<X>_LIMIT``); the size of
the private /tmp (``INTERPRETER_TMP_LIMIT``) is the server's alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from interpreter.config import Settings
from interpreter.errors import ConfigurationError, InvalidRequest

__all__ = [
    "LIMITS",
    "MIN_PROCESSES",
    "ResourceLimits",
    "below_minimum",
    "describe_bytes",
    "resolve_limits",
]


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """What one job may use. Enforced by the sandbox (cgroup, rlimits, tmpfs size)."""

    cpu_time_s: float  # CPU time of all its processes together (cgroup) and of each (RLIMIT_CPU)
    memory_bytes: int  # cgroup memory (RSS, page cache and tmpfs it writes), no swap
    processes: int  # tasks (processes and threads) at once: the pids cgroup
    file_size_bytes: int  # largest file it may write (RLIMIT_FSIZE)
    open_files: int  # file descriptors per process (RLIMIT_NOFILE)
    workspace_bytes: int  # disk used in its working directory (sampled)
    tmp_bytes: int  # size of its private /tmp (tmpfs), set by the server only

    @classmethod
    def defaults(cls, settings: Settings) -> ResourceLimits:
        """The server's defaults; ``ConfigurationError`` if one is above its maximum."""
        values: dict[str, Any] = {"tmp_bytes": settings.tmp_limit_bytes}
        for name, spec in LIMITS.items():
            default, maximum = getattr(settings, spec.default), getattr(settings, spec.maximum)
            if default > maximum:
                raise ConfigurationError(
                    f"{env_name(spec.default)} ({default:g}) must not exceed "
                    f"{env_name(spec.maximum)} ({maximum:g})"
                )
            values[name] = default
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], fallback: ResourceLimits) -> ResourceLimits:
        """Limits stored with a job; a field missing from ``data`` comes from ``fallback``."""
        known = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.replace(fallback, **{k: v for k, v in data.items() if k in known})


# Tasks of a job that are the sandbox's own: bubblewrap and the pid 1 it starts in the job's pid
# namespace. With 1 task bubblewrap cannot create its namespaces, with 2 it cannot fork pid 1;
# 3 runs `print(1)` or `echo hi`, 4 a pipe or a subprocess. Node needs about 9 (its threads).
SANDBOX_TASKS = 2
MIN_PROCESSES = SANDBOX_TASKS + 1


class _Limit(NamedTuple):
    default: str  # the Settings field of the default
    maximum: str  # the Settings field of the maximum
    minimum: float  # what a request may ask at least (0: anything above 0)
    unit: str  # "s", "bytes" or "" (a count)
    why: str = ""  # why the minimum, when it is not obvious


LIMITS: dict[str, _Limit] = {
    "cpu_time_s": _Limit("cpu_time_limit_s", "max_cpu_time_limit_s", 0, "s"),
    "memory_bytes": _Limit("memory_limit_bytes", "max_memory_limit_bytes", 16 * 2**20, "bytes"),
    "processes": _Limit(
        "process_limit",
        "max_process_limit",
        MIN_PROCESSES,
        "",
        f"the sandbox's own processes need {SANDBOX_TASKS}",
    ),
    "file_size_bytes": _Limit("file_size_limit_bytes", "max_file_size_limit_bytes", 2**20, "bytes"),
    "open_files": _Limit("open_files_limit", "max_open_files_limit", 16, ""),
    "workspace_bytes": _Limit("workspace_limit_bytes", "max_workspace_limit_bytes", 2**20, "bytes"),
}


def env_name(field: str) -> str:
    """The environment variable of a Settings field (``INTERPRETER_MEMORY_LIMIT``)."""
    return Settings.model_fields[field].alias or f"INTERPRETER_{field.upper()}"


def describe_bytes(value: float) -> str:
    """``268435456`` -> ``256 MiB``; exact multiples only, else the byte count."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size and value % size == 0:
            return f"{int(value // size)} {unit}"
    return f"{int(value)} bytes"


def _describe(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{int(value)} ({describe_bytes(value)})"
    return f"{value:g} s" if unit == "s" else f"{value:g}"


def below_minimum(name: str, value: float) -> str:
    """What is wrong with ``value``, below the minimum of limit ``name``."""
    spec = LIMITS[name]
    least = f"at least {_describe(spec.minimum, spec.unit)}" if spec.minimum else "above 0"
    why = f" ({spec.why})" if spec.why else ""
    return f"limits.{name} must be {least}{why}; got {_describe(value, spec.unit)}"


def resolve_limits(
    settings: Settings, requested: Mapping[str, float | int | None] | None
) -> ResourceLimits:
    """The server's defaults with what the request asked on top; ``InvalidRequest`` (422) when
    a value is unknown, below its minimum or above the server's maximum."""
    limits = ResourceLimits.defaults(settings)
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in (requested or {}).items():
        spec = LIMITS.get(name)
        if spec is None:
            problems.append(f"limits.{name} is not a limit (known: {', '.join(LIMITS)})")
            continue
        if value is None:
            continue
        maximum = getattr(settings, spec.maximum)
        if spec.unit != "s" and value != int(value):
            problems.append(f"limits.{name} must be a whole number; got {value:g}")
        elif value > maximum:
            problems.append(
                f"limits.{name} must be at most {_describe(maximum, spec.unit)} on this server "
                f"({env_name(spec.maximum)}); got {_describe(value, spec.unit)}"
            )
        elif value <= 0 or value < spec.minimum:
            problems.append(below_minimum(name, value))
        else:
            changes[name] = float(value) if spec.unit == "s" else int(value)
    if problems:
        raise InvalidRequest("; ".join(problems))
    return dataclasses.replace(limits, **changes)
