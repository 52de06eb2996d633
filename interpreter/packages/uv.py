"""uv, run by the server on the host (never in a job's sandbox), with nothing of the server's
own environment but what reaching the registry needs.

Every run: wheels only (``--only-binary :all:``: no package's build code ever runs here), no
configuration file of the host (``UV_NO_CONFIG``), no interpreter download, hard links from
one cache (``UV_LINK_MODE=hardlink``: environments share the cache's files), a fixed working
directory, and a time limit after which uv's whole process group is killed. uv trusts the host's
certificate store; certificate and proxy variables, and uv's request timeout and retries,
pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from interpreter.errors import (
    ConfigurationError,
    PackagesUnresolvable,
    RegistryUnavailable,
)

__all__ = ["Uv", "UvFailed", "find_uv"]

PASSED_THROUGH = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "UV_HTTP_TIMEOUT",  # an operator's tuning of uv's requests to the registry
    "UV_HTTP_RETRIES",
)
logger = logging.getLogger(__name__)

RESOLUTION_FAILED = 1  # uv's exit code when no set of packages satisfies the request
MAX_ERROR_CHARS = 2000


def find_uv() -> str:
    """The uv binary installed with this package (the ``uv`` distribution), else on PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    import shutil

    found = shutil.which("uv")
    if found is None:
        raise ConfigurationError(
            "uv not found: per-job packages need it (pip install 'interpreter-server[server]')"
        )
    return found


@dataclass(frozen=True, slots=True)
class UvFailed(Exception):
    """uv exited with an error: its exit code and what it said (``error:`` and ``cause:``)."""

    code: int | None  # None: killed at the time limit
    output: str

    def cause(self) -> str:
        """uv's most telling words: its last ``cause:`` with the lines that continue it
        (indented, up to a blank line or a ``hint:``), else its ``error:`` line."""
        causes: list[list[str]] = []
        errors: list[str] = []
        lines = self.output.splitlines()
        for line in lines:
            text = line.strip()
            if text.startswith("cause: "):
                causes.append([text.removeprefix("cause: ")])
            elif text.startswith("error: "):
                errors.append(text.removeprefix("error: "))
            elif causes and text and line.startswith(" ") and not text.startswith("hint:"):
                causes[-1].append(text)  # the cause goes on
            elif causes and not text:
                causes.append([])  # a blank line ends it
        found = [" ".join(parts) for parts in causes if parts]
        fallback = [text.strip() for text in lines if text.strip()]
        text = (found or errors or fallback or ["uv failed without a message"])[-1]
        return text[:MAX_ERROR_CHARS]


# An absolute host path in uv's words (a file, the cache, an interpreter), not a URL's path
HOST_PATH = re.compile(r"(?<![\w:/.])/[^\s`'\"]*")


def public(text: str) -> str:
    """uv's words as a caller may read them: host paths replaced (the log keeps them)."""
    return HOST_PATH.sub("<path>", text)


def classify(failure: UvFailed) -> Exception:
    """The error a resolution failure is for the caller: ``PackagesUnresolvable`` (422, with its
    kind) when no set of wheels satisfies the request, ``RegistryUnavailable`` (503) when the
    registry could not be asked."""
    logger.warning("uv failed (exit code %s): %s", failure.code, failure.output[-2000:])
    cause = public(failure.cause())
    if failure.code is None:
        return RegistryUnavailable("the package registry did not answer in time; retry later")
    if failure.code == RESOLUTION_FAILED and "wasn't found in the cache" not in failure.output:
        if "no usable wheels" in cause or "no matching distribution" in cause.lower():
            kind = "no_wheel"
        elif "not found in the package registry" in cause or "there is no version of" in cause:
            kind = "not_found"
        else:
            kind = "unsatisfiable"
        cause = cause.replace("the-job depends on", "your request needs")
        return PackagesUnresolvable(f"packages cannot be resolved ({kind}): {cause}", kind=kind)
    return RegistryUnavailable(f"the package registry could not be reached: {cause}")


class Uv:
    def __init__(self, binary: str, cache_dir: Path, index_url: str | None = None) -> None:
        self.binary = binary
        self.cache_dir = cache_dir
        self.index_url = index_url

    def environment(self) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.cache_dir),
            "LANG": "C.UTF-8",
            "UV_CACHE_DIR": str(self.cache_dir),
            "UV_NO_CONFIG": "1",
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_LINK_MODE": "hardlink",
            "UV_NO_PROGRESS": "1",
            # the host's certificate store, as pip uses it (a proxy's CA installed there works);
            # older uv reads the second name
            "UV_SYSTEM_CERTS": "1",
            "UV_NATIVE_TLS": "1",
            "NO_COLOR": "1",
        }
        if self.index_url:
            env["UV_DEFAULT_INDEX"] = self.index_url
        env.update({name: os.environ[name] for name in PASSED_THROUGH if name in os.environ})
        return env

    async def run(self, args: list[str], timeout_s: float, cwd: Path) -> str:
        """uv ``args``; its stdout. ``UvFailed`` when it fails or passes ``timeout_s``."""
        return await self._exec([self.binary, *args], timeout_s, cwd)

    async def _exec(self, argv: list[str], timeout_s: float, cwd: Path) -> str:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.environment(),
            cwd=cwd,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise UvFailed(None, f"took longer than {timeout_s:g} s") from None
        if proc.returncode != 0:
            raise UvFailed(proc.returncode, err.decode(errors="replace"))
        return out.decode(errors="replace")

    async def compile(
        self, requirements: tuple[str, ...], python: str, timeout_s: float, offline: bool = False
    ) -> tuple[str, ...]:
        """The pins (``name==version``, sorted) that satisfy ``requirements`` with wheels for
        ``python``. The requirements are data in a ``pyproject.toml``: uv reads them as
        dependencies, never as lines of a requirements file."""
        scratch = self.cache_dir.parent / "resolving"
        try:
            scratch.mkdir(parents=True, exist_ok=True)
            tmp_dir = tempfile.TemporaryDirectory(dir=scratch)
        except OSError as exc:
            logger.error("package resolution: scratch directory: %s", exc)
            raise UvFailed(2, "the server could not write its scratch files") from None
        with tmp_dir as tmp:
            project = Path(tmp) / "pyproject.toml"
            deps = ", ".join(json.dumps(r) for r in requirements)  # a JSON string is TOML's too
            project.write_text(
                f'[project]\nname = "the-job"\nversion = "0"\ndependencies = [{deps}]\n'
            )
            args = ["pip", "compile", str(project), "--only-binary", ":all:", "--python", python]
            args += ["--no-header", "--no-annotate", "--quiet"]
            if offline:
                args.append("--offline")
            out = await self.run(args, timeout_s, Path(tmp))
        pins = [line.strip() for line in out.splitlines()]
        return tuple(sorted(p for p in pins if p and not p.startswith(("#", "-"))))

    async def build(
        self, target: Path, pins: tuple[str, ...], python: str, timeout_s: float
    ) -> None:
        """A relocatable virtual environment at ``target`` holding exactly ``pins`` (no
        dependency resolved again), bytecode compiled: from the cache alone when it has every
        wheel, else from the registry.

        Nothing of what it installs ever runs here. uv's own ``--compile-bytecode`` would start
        the new environment's python, whose start-up executes the ``import`` lines of any
        ``.pth`` file a wheel ships, on the host, as the server's user. The bytecode is compiled
        by the base interpreter instead, with ``-I -S`` (no site: no ``.pth`` is read, no
        environment variable or working directory counts); compiling runs no module."""
        await self.run(
            ["venv", "--quiet", "--relocatable", "--python", python, str(target)],
            timeout_s,
            target.parent,
        )
        lock = target.parent / f"{target.name}.txt"
        lock.write_text("".join(f"{pin}\n" for pin in pins))  # uv's own pins, not caller text
        try:
            args = ["pip", "install", "--quiet", "--python", str(target / "bin" / "python")]
            args += ["--no-deps", "--only-binary", ":all:", "-r", str(lock)]
            try:
                await self.run([*args, "--offline"], timeout_s, target.parent)
            except UvFailed as exc:
                if exc.code is None:
                    raise
                await self.run(args, timeout_s, target.parent)
        finally:
            lock.unlink(missing_ok=True)
        compile_all = [os.path.realpath(python), "-I", "-S", "-m", "compileall", "-qq", "-j", "0"]
        try:
            await self._exec([*compile_all, str(target)], timeout_s, target.parent)
        except UvFailed as exc:
            if exc.code is None:
                raise
            # a file that does not compile (a template, another Python's syntax) gets no .pyc,
            # as with uv's own compilation; the rest is compiled

    async def clean_cache(self, timeout_s: float) -> None:
        """Empty the cache: files an environment links stay (theirs), the rest is freed."""
        await self.run(["cache", "clean"], timeout_s, self.cache_dir.parent)
