"""The environment a job runs with: a minimal base plus the caller's variables, never ours."""

from __future__ import annotations

import re
from collections.abc import Mapping

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
REDACTED = "***"
VALID_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def build_environment(
    *, path: str, home: str, tmpdir: str, extra: Mapping[str, str]
) -> dict[str, str]:
    """PATH, HOME (the job's directory), LANG and TMPDIR, then the caller's variables on top."""
    env = {"PATH": path, "HOME": home, "LANG": "C.UTF-8", "TMPDIR": tmpdir}
    env.update(extra)
    return env


def redact(env: Mapping[str, str]) -> dict[str, str]:
    """The environment as shown to callers: values of names that look secret are masked."""
    return {
        name: (REDACTED if SECRET_NAME.search(name) else value)
        for name, value in sorted(env.items())
    }


def invalid_names(names: Mapping[str, str]) -> list[str]:
    """Variable names a process environment cannot carry."""
    return [name for name in names if not VALID_NAME.match(name)]
