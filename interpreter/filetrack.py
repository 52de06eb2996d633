"""Snapshots of a job's working directory and the difference between two of them.

The walk never follows a symlink: a link is an entry of its own (``lstat`` semantics), reported by
its own path and never descended into, even when it points at a directory. Each directory is
opened with ``O_NOFOLLOW`` and checked to be the very directory the parent listed, so a job that
swaps a directory for a symlink mid-scan cannot steer the walk outside its tree. A snapshot is
bounded in entries and seconds; hitting a bound marks it incomplete instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

logger = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """Bounds on one file-tracking snapshot of a working directory."""

    max_entries: int = 100_000
    max_seconds: float = 5.0


class FileStat(NamedTuple):
    size: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Regular files and symlinks under a directory: absolute path -> ``FileStat``."""

    entries: Mapping[str, FileStat] = field(default_factory=dict)
    complete: bool = True
    note: str | None = None


EMPTY = Snapshot()


@dataclass(frozen=True, slots=True)
class Diff:
    created: tuple[str, ...]
    modified: tuple[str, ...]
    deleted: tuple[str, ...]
    complete: bool
    note: str | None


class _ScanStopped(Exception):
    """A scan bound was hit; the message says which."""


class _Budget:
    """Counts entries and watches the clock; raises ``_ScanStopped`` when a bound is hit."""

    def __init__(self, limits: ScanLimits) -> None:
        self._limits = limits
        self._deadline = time.monotonic() + limits.max_seconds
        self._seen = 0

    def tick(self) -> None:
        self._seen += 1
        if self._seen > self._limits.max_entries:
            raise _ScanStopped(f"file scan stopped after {self._limits.max_entries} entries")
        if time.monotonic() > self._deadline:
            raise _ScanStopped(f"file scan stopped after {self._limits.max_seconds:g} s")


def _walk(root: Path, budget: _Budget) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``root`` with its ``lstat``: symlinks are entries, never followed, and a
    directory swapped for something else after its parent was listed is skipped."""
    top = os.path.abspath(root)
    try:
        top_stat = os.lstat(top)
    except OSError:
        return
    if not stat.S_ISDIR(top_stat.st_mode):
        return
    pending: list[tuple[str, int, int]] = [(top, top_stat.st_dev, top_stat.st_ino)]
    while pending:
        path, dev, ino = pending.pop()
        for name, st in _list_dir(path, dev, ino, budget):
            full = os.path.join(path, name)
            if stat.S_ISDIR(st.st_mode):
                pending.append((full, st.st_dev, st.st_ino))
            yield full, st


def scan(root: Path, limits: ScanLimits) -> Snapshot:
    """Walk ``root`` without following symlinks, within ``limits`` (blocking)."""
    entries: dict[str, FileStat] = {}
    try:
        for full, st in _walk(root, _Budget(limits)):
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                entries[full] = FileStat(st.st_size, st.st_mtime_ns, st.st_ino)
    except _ScanStopped as stop:
        logger.debug("%s under %s", stop, root)
        return Snapshot(entries, complete=False, note=str(stop))
    return Snapshot(entries)


def disk_usage(root: Path, limits: ScanLimits) -> int:
    """Bytes of disk the tree under ``root`` uses, by the same walk as ``scan``; a floor when a
    bound of ``limits`` stops it (blocking: run it in a thread)."""
    total = 0
    try:
        for _, st in _walk(root, _Budget(limits)):
            total += st.st_blocks * 512
    except _ScanStopped:
        pass
    return total


def _list_dir(path: str, dev: int, ino: int, budget: _Budget) -> list[tuple[str, os.stat_result]]:
    """Names and lstat results in directory ``path``, if it still is (dev, ino); else nothing."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return []
    try:
        here = os.fstat(fd)
        if (here.st_dev, here.st_ino) != (dev, ino):
            return []  # replaced since its parent was listed
        listed: list[tuple[str, os.stat_result]] = []
        with os.scandir(fd) as it:
            for entry in it:
                budget.tick()
                try:
                    listed.append((entry.name, entry.stat(follow_symlinks=False)))
                except OSError:
                    continue  # vanished meanwhile
        return listed
    except OSError:
        return []
    finally:
        os.close(fd)


_INLINE = ScanLimits(max_entries=64, max_seconds=0.002)


async def scan_async(root: Path, limits: ScanLimits) -> Snapshot:
    """``scan`` without blocking the event loop: a small tree (most jobs leave a few files) is
    read inline within a 2 ms budget; anything larger is scanned again in a worker thread."""
    inline = ScanLimits(
        min(_INLINE.max_entries, limits.max_entries), min(_INLINE.max_seconds, limits.max_seconds)
    )
    snapshot = scan(root, inline)
    if snapshot.complete or inline == limits:
        return snapshot
    return await asyncio.to_thread(scan, root, limits)


def diff(before: Snapshot, after: Snapshot) -> Diff:
    """What was created, modified (size, mtime or inode changed) and deleted between snapshots."""
    old, new = before.entries, after.entries
    created = sorted(path for path in new if path not in old)
    deleted = sorted(path for path in old if path not in new)
    modified = sorted(path for path, now in new.items() if path in old and old[path] != now)
    notes = [note for note in (before.note, after.note) if note]
    return Diff(
        created=tuple(created),
        modified=tuple(modified),
        deleted=tuple(deleted),
        complete=before.complete and after.complete,
        note="; ".join(notes) or None,
    )
