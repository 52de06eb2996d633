"""Package environments on this machine's disk, one per lock, shared by every job that asks for
the same packages.

Layout under ``<data dir>/packages``::

    cache/          uv's cache: every wheel once; environments hard-link their files from it
    envs/<id>/      a relocatable venv, bytecode compiled (jobs bind it read-only)
    envs/<id>.json  what it holds: requirements, packages, size, when made; its mtime = last use
    locks/<id>      flock: exclusive while it is built or removed, shared while a job uses it
    tmp/            builds in progress (renamed into envs/ when complete) and removals

An environment's id is the hash of the interpreter and the lock's pins: the same pins on the
same interpreter are the same environment. It is built in ``tmp/`` and renamed into place, so
``envs/<id>`` exists only complete; one build per id at a time (the lock file, across
processes). When a build passes ``INTERPRETER_PACKAGES_CACHE_BYTES`` (environments and cache
together, each file counted once), the least recently used environments that no job holds are
removed, then, if that is not enough, uv's cache is emptied (environments keep their files).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from interpreter import tree
from interpreter.errors import EnvironmentFailed, EnvironmentInUse, EnvironmentNotFound
from interpreter.limits import describe_bytes
from interpreter.packages.requirements import pin_name
from interpreter.packages.uv import Uv, UvFailed, public

__all__ = ["EnvironmentInfo", "Environments", "Lease", "python_identity"]

logger = logging.getLogger(__name__)

LOCK_POLL_S = 0.05
CACHE_CLEAN_TIMEOUT_S = 120.0


def python_identity(python: str) -> str:
    """What makes an interpreter's environments its own: its real path and exact version."""
    real = os.path.realpath(python)
    try:
        out = subprocess.run(
            [real, "-c", "import sys; print(sys.version)"],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin"},
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = "unknown"
    return f"{real}\n{out}"


@dataclass(frozen=True, slots=True)
class EnvironmentInfo:
    id: str
    requirements: tuple[str, ...]
    packages: dict[str, str]
    size_bytes: int
    created_at: datetime
    last_used_at: datetime
    in_use: bool


@dataclass(slots=True)
class Lease:
    """An environment a job holds (shared lock) until ``release``: it is not removed meanwhile."""

    id: str
    path: Path
    packages: dict[str, str]
    cached: bool  # it existed: nothing was built for this job
    install_ms: float
    _lock_fd: int | None = field(default=None, repr=False)

    def open(self) -> int:
        """A descriptor of its directory (the sandbox binds it by descriptor)."""
        return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # drops the shared lock
            self._lock_fd = None


class Environments:
    def __init__(
        self,
        root: Path,
        uv: Uv,
        python: str,
        install_timeout_s: float,
        max_env_bytes: int,
        cache_bytes: int,
    ) -> None:
        self.root = root
        self.uv = uv
        self.python = python
        self.install_timeout_s = install_timeout_s
        self.max_env_bytes = max_env_bytes
        self.cache_bytes = cache_bytes
        self.envs = root / "envs"
        self.locks = root / "locks"
        self.tmp = root / "tmp"
        self._identity: str | None = None
        self._ready = False
        self._building = asyncio.Lock()  # one build or eviction at a time in this process
        self._waiting: dict[str, asyncio.Lock] = {}
        self._evictions: set[asyncio.Task[list[str]]] = set()

    def setup(self) -> None:
        """Make the directories and clear what a dead process left in ``tmp/`` (once, at the
        first use: this process runs the jobs of its data directory, nobody else)."""
        if self._ready:
            return
        for directory in (self.root, self.envs, self.locks, self.tmp, self.uv.cache_dir):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        for entry in self.tmp.iterdir():  # builds and removals a dead process left
            _remove(entry)
        self._ready = True

    def _first_use(self) -> None:
        self.setup()
        self.identity  # noqa: B018 (asked of the interpreter once, off the loop)

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = python_identity(self.python)
        return self._identity

    def env_id(self, pins: tuple[str, ...]) -> str:
        text = "\n".join((self.identity, *pins))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    # -- a job's environment ---------------------------------------------------------------
    async def acquire(self, requirements: tuple[str, ...], pins: tuple[str, ...]) -> Lease:
        """The environment of ``pins``, built now unless it exists, held (shared) for a job:
        ``EnvironmentFailed`` saying why when it cannot be built."""
        if not self._ready or self._identity is None:  # once: directories, interpreter
            await asyncio.to_thread(self._first_use)
        env_id = self.env_id(pins)
        lock_fd = os.open(self.locks / env_id, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            started = time.perf_counter()
            built = False
            waiting = self._waiting.setdefault(env_id, asyncio.Lock())
            async with waiting:  # this process's jobs for one id: one builds, the rest wait
                while True:
                    await _flock(lock_fd, fcntl.LOCK_SH)
                    if (self.envs / env_id).is_dir():
                        break
                    await _flock(lock_fd, fcntl.LOCK_EX)  # a build, or a removal, of ours now
                    if not (self.envs / env_id).is_dir():
                        await self._build(env_id, requirements, pins)
                        built = True
            self._touch(env_id)
            install_ms = round((time.perf_counter() - started) * 1000, 3) if built else 0.0
            packages = dict(pin_name(pin) for pin in pins)
            lease = Lease(env_id, self.envs / env_id, packages, not built, install_ms, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise
        return lease

    def _evict_soon(self) -> None:
        """Evict off the job's path (a reference kept until it ends)."""
        task = asyncio.get_running_loop().create_task(self.evict(), name="packages-evict")
        self._evictions.add(task)
        task.add_done_callback(self._evictions.discard)

    async def _build(
        self, env_id: str, requirements: tuple[str, ...], pins: tuple[str, ...]
    ) -> None:
        async with self._building:
            target = self.tmp / f"{env_id}-{uuid.uuid4().hex[:8]}"
            try:
                try:
                    await self.uv.build(target, pins, self.python, self.install_timeout_s)
                except UvFailed as exc:
                    if exc.code is None:
                        raise EnvironmentFailed(
                            "installing the packages took longer than "
                            f"{self.install_timeout_s:g} s (INTERPRETER_PACKAGES_INSTALL_TIMEOUT)"
                        ) from None
                    logger.warning("package install failed: %s", exc.output[-2000:])
                    raise EnvironmentFailed(
                        f"the packages could not be installed: {public(exc.cause())}"
                    ) from None
                size = await asyncio.to_thread(_open_to_all, target)
                if size > self.max_env_bytes:
                    raise EnvironmentFailed(
                        f"the packages take {describe_bytes(size)} installed, over the "
                        f"{describe_bytes(self.max_env_bytes)} an environment may take "
                        "(INTERPRETER_PACKAGES_MAX_ENV_BYTES)"
                    )
                meta = {
                    "id": env_id,
                    "requirements": list(requirements),
                    "pins": list(pins),
                    "size_bytes": size,
                    "created_at": time.time(),
                }
                (self.envs / f"{env_id}.json").write_text(json.dumps(meta))
                os.rename(target, self.envs / env_id)
            except OSError as exc:
                logger.error("package environment %s: %s", env_id, exc)
                raise EnvironmentFailed(
                    f"the packages' environment could not be made: {exc.strerror or 'I/O error'}"
                ) from None
            finally:
                if target.exists():
                    await asyncio.to_thread(_remove, target)
                # after every build, done or failed: what it downloaded stays in the cache
                self._evict_soon()
            logger.info("package environment built", extra={"environment": env_id, "size": size})

    def _touch(self, env_id: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.envs / f"{env_id}.json")

    # -- what is here ----------------------------------------------------------------------
    def all(self) -> list[EnvironmentInfo]:
        """Every complete environment, the most recently used first (blocking: reads files)."""
        self.setup()
        found = []
        for meta_path in self.envs.glob("*.json"):
            info = self._info(meta_path.stem)
            if info is not None:
                found.append(info)
        return sorted(found, key=lambda info: info.last_used_at, reverse=True)

    def _info(self, env_id: str) -> EnvironmentInfo | None:
        meta_path = self.envs / f"{env_id}.json"
        try:
            meta = json.loads(meta_path.read_text())
            used = meta_path.stat().st_mtime
        except (OSError, ValueError):
            return None
        if not (self.envs / env_id).is_dir():
            return None
        return EnvironmentInfo(
            id=env_id,
            requirements=tuple(meta["requirements"]),
            packages=dict(pin_name(pin) for pin in meta["pins"]),
            size_bytes=int(meta["size_bytes"]),
            created_at=datetime.fromtimestamp(meta["created_at"], UTC),
            last_used_at=datetime.fromtimestamp(used, UTC),
            in_use=self._in_use(env_id),
        )

    def get(self, env_id: str) -> EnvironmentInfo:
        info = self._info(env_id) if _plain_id(env_id) else None
        if info is None:
            raise EnvironmentNotFound(f"Environment not found: {env_id}")
        return info

    def _in_use(self, env_id: str) -> bool:
        try:
            with self._exclusive(env_id):
                return False
        except EnvironmentInUse:
            return True

    @contextlib.contextmanager
    def _exclusive(self, env_id: str) -> Iterator[None]:
        """Hold ``env_id``'s lock exclusively, at once or ``EnvironmentInUse``."""
        fd = os.open(self.locks / env_id, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EnvironmentInUse(
                    f"Environment {env_id} is in use by a running job (or being built)"
                ) from None
            yield
        finally:
            os.close(fd)

    # -- removal ---------------------------------------------------------------------------
    async def remove(self, env_id: str) -> None:
        """``EnvironmentNotFound``, ``EnvironmentInUse``, or it is gone."""
        self.get(env_id)
        async with self._building:
            await asyncio.to_thread(self._remove_unused, env_id)

    def _remove_unused(self, env_id: str) -> None:
        with self._exclusive(env_id):
            target = self.envs / env_id
            if not target.is_dir():
                raise EnvironmentNotFound(f"Environment not found: {env_id}")
            trash = self.tmp / f"removed-{env_id}-{uuid.uuid4().hex[:8]}"
            os.rename(target, trash)
            (self.envs / f"{env_id}.json").unlink(missing_ok=True)
        _remove(trash)
        logger.info("package environment removed", extra={"environment": env_id})

    async def evict(self) -> list[str]:
        """Remove the least recently used environments no job holds until environments and
        cache fit ``cache_bytes``; if they still do not, empty uv's cache (the files
        environments hold stay theirs: hard links). Returns the ids removed."""
        async with self._building:
            removed = await asyncio.to_thread(self._evict_environments)
            if await asyncio.to_thread(self.disk_usage) > self.cache_bytes:
                try:
                    await self.uv.clean_cache(CACHE_CLEAN_TIMEOUT_S)
                except UvFailed as exc:
                    logger.warning("package cache not cleaned: %s", exc.output[-500:])
            return removed

    def _evict_environments(self) -> list[str]:
        removed: list[str] = []
        if self.disk_usage() <= self.cache_bytes:
            return removed
        for info in sorted(self.all(), key=lambda info: info.last_used_at):
            try:
                self._remove_unused(info.id)
            except (EnvironmentInUse, EnvironmentNotFound):
                continue  # a job holds it: never removed under it
            except OSError as exc:
                logger.warning("package environment %s not removed: %s", info.id, exc)
                continue
            removed.append(info.id)
            if self.disk_usage() <= self.cache_bytes:
                break
        return removed

    def disk_usage(self) -> int:
        """Bytes the environments and the cache take on disk, each file counted once."""
        return disk_usage(self.envs, self.uv.cache_dir)


def disk_usage(*tops: Path) -> int:
    """Bytes the files under ``tops`` take on disk, each counted once (hard links)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in tops:
        for directory, dirs, files in os.walk(top):
            for name in (*dirs, *files):
                try:
                    st = os.lstat(os.path.join(directory, name))
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def _plain_id(env_id: str) -> bool:
    return len(env_id) == 24 and all(c in "0123456789abcdef" for c in env_id)


def _open_to_all(root: Path) -> int:
    """Make everything under ``root`` readable (and directories searchable) by every uid,
    whatever umask the server runs with: jobs run as uids of their own. Returns what the files
    hold (hard links into the cache counted in full)."""
    total = 0
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            wanted = st.st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
            if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR:
                wanted |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
            if wanted != st.st_mode:
                os.chmod(path, stat.S_IMODE(wanted))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    os.chmod(root, 0o755)
    return total


def _remove(path: Path) -> None:
    """Remove a build, a removed environment or a file, never through a symlink."""
    try:
        tree.remove_path(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            logger.warning("package scratch %s not removed: %s", path.name, exc)


async def _flock(fd: int, operation: int) -> None:
    """Take an flock without blocking the loop (polling: a thread blocked in flock could not
    be cancelled)."""
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            await asyncio.sleep(LOCK_POLL_S)
