"""A request's packages resolved to a lock: the exact wheels' versions, asked of the registry
once and reused.

A resolution is kept on disk (``locks/<hash of the interpreter's tag, the index and the
requirements>.json``) for
``INTERPRETER_PACKAGES_LOCK_TTL``: the same request again within it costs no registry round
trip. When the registry cannot be reached, an older resolution of the same request is used
rather than failing. Concurrent requests for one set in this process resolve it once, and at
most ``RESOLVING_AT_ONCE`` uv processes resolve at a time (many distinct sets sent at once
wait rather than start a process each).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from interpreter.errors import RegistryUnavailable
from interpreter.packages.environments import disk_usage
from interpreter.packages.requirements import canonical_requirements
from interpreter.packages.uv import Uv, UvFailed, classify

__all__ = ["PackageResolver", "Resolution"]

RESOLVING_AT_ONCE = 4  # uv processes resolving in this process at once; more requests wait
KEEP_RESOLUTIONS_S = 30 * 24 * 3600.0  # a kept resolution written this long ago is dropped
TIDY_EVERY_S = 600.0  # at most this often, after a resolution that asked the registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resolution:
    requirements: tuple[str, ...]  # canonical, sorted
    pins: tuple[str, ...]  # name==version, sorted: the lock
    resolve_ms: float  # what resolving took this time (reading a kept lock: ~0)
    reused: bool  # a kept resolution answered; the registry was not asked
    python: str = ""  # the interpreter it is for (``PackageResolver.python_tag``)


class PackageResolver:
    def __init__(
        self,
        uv: Uv,
        python: str,
        locks_dir: Path,
        max_packages: int,
        ttl_s: float,
        timeout_s: float,
    ) -> None:
        self.uv = uv
        self.python = python
        self.locks_dir = locks_dir
        self.max_packages = max_packages
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._pending: dict[str, asyncio.Task[Resolution]] = {}
        self._slots = asyncio.Semaphore(RESOLVING_AT_ONCE)
        self._tag: str | None = None
        # Set where no environments share uv's cache (an API-only replica): its bound
        self.cache_bytes: int | None = None
        self._tidied = -TIDY_EVERY_S

    async def python_tag(self) -> str:
        """What wheels and markers depend on of this interpreter: implementation, version and
        machine (``cpython 3.11 x86_64``). A lock made for another tag may not install here.
        Asked of the interpreter once, without ``site`` (nothing of an environment runs)."""
        if self._tag is None:
            script = (
                "import sys, platform; v = sys.version_info; "
                "print(sys.implementation.name, f'{v[0]}.{v[1]}', platform.machine())"
            )
            proc = await asyncio.create_subprocess_exec(
                os.path.realpath(self.python),
                "-I",
                "-S",
                "-c",
                script,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin"},
            )
            out, _ = await proc.communicate()
            self._tag = out.decode(errors="replace").strip() or "unknown"
        return self._tag

    def check(self, entries: Sequence[str]) -> tuple[str, ...]:
        """The canonical requirements; ``InvalidPackages`` when one is refused."""
        return canonical_requirements(entries, self.max_packages)

    def _path(self, requirements: tuple[str, ...], tag: str) -> Path:
        identity = "\n".join((tag, self.uv.index_url or "", *requirements))
        return self.locks_dir / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"

    async def resolve(self, entries: Sequence[str]) -> Resolution:
        """The lock of ``entries``: ``InvalidPackages``, ``PackagesUnresolvable`` (422) or
        ``RegistryUnavailable`` (503) when there is none. The resolution is a task of its own
        that every request for the set awaits: one that leaves (its client went away) cancels
        neither it nor the others' wait."""
        requirements = self.check(entries)
        tag = await self.python_tag()
        path = self._path(requirements, tag)
        task = self._pending.get(path.name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._resolve(requirements, path))
            self._pending[path.name] = task
            task.add_done_callback(lambda done: self._settled(path.name, done))
        resolution = await asyncio.shield(task)
        return dataclasses.replace(resolution, python=tag)

    def _settled(self, key: str, task: asyncio.Task[Resolution]) -> None:
        del self._pending[key]
        if not task.cancelled():
            task.exception()  # retrieved: no warning when every request had left

    async def _resolve(self, requirements: tuple[str, ...], path: Path) -> Resolution:
        started = time.perf_counter()
        kept = _read(path)
        if kept is not None and time.time() - kept[1] < self.ttl_s:
            return Resolution(requirements, kept[0], _ms(started), reused=True)
        try:
            async with self._slots:
                pins = await self.uv.compile(requirements, self.python, self.timeout_s)
        except UvFailed as exc:
            error = classify(exc)
            if isinstance(error, RegistryUnavailable) and kept is not None:
                logger.warning("package registry unreachable; an older resolution is used")
                return Resolution(requirements, kept[0], _ms(started), reused=True)
            raise error from None
        _write(path, pins)
        await self._tidy()
        return Resolution(requirements, pins, _ms(started), reused=False)

    async def _tidy(self) -> None:
        """After a resolution that asked the registry: drop kept resolutions nobody asked for in
        ``KEEP_RESOLUTIONS_S`` and, where no environments share the cache (an API-only
        replica: ``cache_bytes`` set), empty uv's cache once it passes its bound."""
        now = time.monotonic()
        if now - self._tidied < TIDY_EVERY_S:
            return
        self._tidied = now
        await asyncio.to_thread(_prune, self.locks_dir, max(self.ttl_s, KEEP_RESOLUTIONS_S))
        if self.cache_bytes is None:
            return
        if await asyncio.to_thread(disk_usage, self.uv.cache_dir) > self.cache_bytes:
            try:
                await self.uv.clean_cache(self.timeout_s)
            except UvFailed as exc:
                logger.warning("package cache not cleaned: %s", exc.output[-500:])


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _read(path: Path) -> tuple[tuple[str, ...], float] | None:
    """A kept resolution: (pins, when it was made)."""
    try:
        data = json.loads(path.read_text())
        return tuple(data["pins"]), float(data["resolved_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _prune(locks_dir: Path, older_than_s: float) -> None:
    """Remove kept resolutions written longer ago than ``older_than_s``."""
    limit = time.time() - older_than_s
    try:
        entries = list(locks_dir.glob("*.json"))
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < limit:
                entry.unlink()


def _write(path: Path, pins: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        fresh.write_text(json.dumps({"pins": list(pins), "resolved_at": time.time()}))
        os.replace(fresh, path)
    except OSError as exc:  # the next request resolves again
        logger.warning("a package resolution was not kept: %s", exc)
        with contextlib.suppress(OSError):
            fresh.unlink()
