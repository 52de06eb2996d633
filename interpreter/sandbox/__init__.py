"""Where a job's code runs: in a bubblewrap sandbox with a cgroup of its own, or as it is."""

from __future__ import annotations

from interpreter.sandbox.limits import LIMITS, ResourceLimits, describe_bytes, resolve_limits

__all__ = ["LIMITS", "ResourceLimits", "describe_bytes", "resolve_limits"]
