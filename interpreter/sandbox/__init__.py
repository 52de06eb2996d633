"""Where a job's code runs: in a bubblewrap sandbox with a cgroup of its own, or as it is.

``create_sandbox(settings, executables)`` picks by ``INTERPRETER_SANDBOX``: ``bwrap`` sets up
and tries the sandbox once, and refuses to start (``ConfigurationError``, saying how to fix it)
when bubblewrap or cgroups are unusable; ``none`` logs a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from interpreter.config import Settings
from interpreter.limits import LIMITS, ResourceLimits, describe_bytes, resolve_limits
from interpreter.sandbox.base import (
    Confinement,
    NoSandbox,
    Prepared,
    Sandbox,
    SandboxJob,
)
from interpreter.sandbox.bwrap import BwrapSandbox

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
]

logger = logging.getLogger(__name__)


def create_sandbox(settings: Settings, executables: Iterable[str]) -> Sandbox:
    """The sandbox ``INTERPRETER_SANDBOX`` names, ready to use."""
    if settings.sandbox == "bwrap":
        return BwrapSandbox.from_settings(settings, executables)
    sandbox = NoSandbox()
    logger.warning(sandbox.describe()["warning"])
    return sandbox
