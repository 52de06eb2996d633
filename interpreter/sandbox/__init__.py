"""Where a job's code runs: in a bubblewrap sandbox with a cgroup of its own, or as it is.

``create_sandbox(settings, executables)`` picks by ``INTERPRETER_SANDBOX``: ``bwrap`` sets up
and tries the sandbox once, and refuses to start (``ConfigurationError``, saying how to fix it)
when bubblewrap or cgroups are unusable; ``none`` logs a warning. ``try_command`` runs a
command once the way a job runs (the language registry checks each interpreter with it).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable, Mapping

from interpreter.config import Settings
from interpreter.errors import ExecutionError
from interpreter.languages import Trial
from interpreter.limits import LIMITS, ResourceLimits, describe_bytes, resolve_limits
from interpreter.sandbox.base import (
    Confinement,
    NoSandbox,
    Prepared,
    Sandbox,
    SandboxJob,
)
from interpreter.sandbox.bwrap import PROBE_TIMEOUT_S, BwrapSandbox

__all__ = [
    "LIMITS",
    "BwrapSandbox",
    "Confinement",
    "NoSandbox",
    "Prepared",
    "ResourceLimits",
    "Sandbox",
    "SandboxJob",
    "create_sandbox",
    "describe_bytes",
    "resolve_limits",
    "try_command",
]

logger = logging.getLogger(__name__)


def create_sandbox(settings: Settings, executables: Iterable[str]) -> Sandbox:
    """The sandbox ``INTERPRETER_SANDBOX`` names, ready to use."""
    if settings.sandbox == "bwrap":
        return BwrapSandbox.from_settings(settings, executables)
    sandbox = NoSandbox()
    logger.warning(sandbox.describe()["warning"])
    return sandbox


def try_command(
    sandbox: Sandbox,
    argv: tuple[str, ...],
    limits: ResourceLimits,
    env: Mapping[str, str],
    language: str,
) -> Trial:
    """Run ``argv`` once as a job of ``language`` would run: in the bubblewrap sandbox, or
    directly without one. A command that cannot start says why in ``stderr``."""
    try:
        if isinstance(sandbox, BwrapSandbox):
            return sandbox.trial(argv, limits, env, language)
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=dict(env),
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Trial(None, "", f"{argv[0]} did not finish within {PROBE_TIMEOUT_S:g} s")
    except (OSError, ExecutionError) as exc:
        return Trial(None, "", f"cannot run {argv[0]}: {getattr(exc, 'strerror', None) or exc}")
    return Trial(
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )
