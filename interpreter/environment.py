"""The environment a job runs with: a minimal base plus the caller's variables, never ours.

The caller's variables are also the environment of everything that starts before the job's own
code (the interpreter's start-up, any helper the sandbox puts in front of it) and of every program
the job runs. Names that make a program load or run code it did not ask for, or change how every
shell script is read, are refused (``REFUSED_NAMES``, ``REFUSED_PREFIXES``): the loader's and C
library's variables (the ones glibc itself strips for setuid programs), shell start-up hooks, and
interpreters' "run this first" options. Search paths for the job's own modules (PYTHONPATH,
NODE_PATH, PERL5LIB) stay allowed: they only say where the job's own imports are found. Names are
case-sensitive, as the loader and shells read them (``env`` is an ordinary name, ``ENV`` is not).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
REDACTED = "***"
VALID_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_LOADER = "changes which libraries every program loads"
_LIBC = "makes the C library load or read files the job chose"
_SHELL_START = "runs code when a shell starts"
_SHELL_READ = "changes how every shell script is read"
_INTERPRETER = "makes the interpreter run code or options before the program"

REFUSED_PREFIXES: dict[str, str] = {
    "LD_": _LOADER,  # LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, LD_DEBUG_OUTPUT, LD_PROFILE, ...
    "BASH_FUNC_": "defines shell functions in every bash started",
}
REFUSED_NAMES: dict[str, str] = {
    # glibc's list of variables unsafe for setuid programs (unsecvars.h), less TMPDIR and TZDIR
    "GLIBC_TUNABLES": _LOADER,
    "GCONV_PATH": _LIBC,
    "GETCONF_DIR": _LIBC,
    "HOSTALIASES": _LIBC,
    "LOCALDOMAIN": _LIBC,
    "LOCPATH": _LIBC,
    "MALLOC_TRACE": _LIBC,
    "NIS_PATH": _LIBC,
    "NLSPATH": _LIBC,
    "RESOLV_HOST_CONF": _LIBC,
    "RES_OPTIONS": _LIBC,
    # shells
    "BASH_ENV": _SHELL_START,
    "ENV": _SHELL_START,
    "PROMPT_COMMAND": _SHELL_START,
    "PS4": "is expanded, command substitutions included, before each traced command",
    "SHELLOPTS": _SHELL_READ,
    "BASHOPTS": _SHELL_READ,
    "IFS": _SHELL_READ,
    "CDPATH": _SHELL_READ,
    "GLOBIGNORE": _SHELL_READ,
    "BASH_XTRACEFD": _SHELL_READ,
    "BASH_LOADABLES_PATH": _SHELL_READ,
    # interpreters (the built-in ones, and those a deployment adds with INTERPRETER_LANGUAGES)
    "PYTHONSTARTUP": _INTERPRETER,
    "PYTHONINSPECT": _INTERPRETER,
    "PYTHONHOME": "replaces the interpreter's standard library",
    "NODE_OPTIONS": _INTERPRETER,
    "PERL5OPT": _INTERPRETER,
    "PERL5DB": _INTERPRETER,
    "RUBYOPT": _INTERPRETER,
    "JAVA_TOOL_OPTIONS": _INTERPRETER,
    "_JAVA_OPTIONS": _INTERPRETER,
    "JDK_JAVA_OPTIONS": _INTERPRETER,
}


def build_environment(
    *, path: str, home: str, tmpdir: str, extra: Mapping[str, str], venv: str | None = None
) -> dict[str, str]:
    """PATH, HOME (the job's directory), LANG and TMPDIR, with a package environment (``venv``,
    where the job sees it) first on PATH and as VIRTUAL_ENV; then the caller's variables."""
    env = {"PATH": path, "HOME": home, "LANG": "C.UTF-8", "TMPDIR": tmpdir}
    if venv is not None:
        env["PATH"] = f"{venv}/bin:{path}"
        env["VIRTUAL_ENV"] = venv
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


def refusal_reason(name: str) -> str | None:
    """Why a job may not set ``name``, or None when it may."""
    if reason := REFUSED_NAMES.get(name):
        return reason
    for prefix, reason in REFUSED_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    return None


def refused_names(names: Mapping[str, str]) -> dict[str, str]:
    """The names a job may not set, each with the reason, sorted by name."""
    return {name: reason for name in sorted(names) if (reason := refusal_reason(name))}
