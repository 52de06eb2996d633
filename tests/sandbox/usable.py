"""Whether this host can run the bubblewrap sandbox (tests that need it skip with the reason),
and where a job's cgroups are."""

from __future__ import annotations

import os
from pathlib import Path

from interpreter.errors import ConfigurationError
from interpreter.sandbox import bwrap
from interpreter.sandbox.cgroups import detect


def bwrap_unusable() -> str | None:
    if bwrap.find_bwrap("/usr/bin:/bin") is None:
        return "bubblewrap is not installed (apt-get install -y bubblewrap)"
    if os.geteuid() != 0:
        return "per-job cgroups need root here"
    try:
        detect().setup()
    except ConfigurationError as exc:
        return exc.message
    return None


UNUSABLE = bwrap_unusable()
if UNUSABLE and os.environ.get("CI"):  # CI installs bubblewrap and runs as root: never skip there
    raise RuntimeError(f"the sandbox tests must run in CI, but: {UNUSABLE}")


def cgroup_dirs(job_id: str) -> list[Path]:
    """The directories of job ``job_id``'s cgroups that exist now."""
    driver = detect()
    driver.setup()
    return [d for d in driver.open(job_id).directories() if d.exists()]
