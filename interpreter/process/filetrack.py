"""Snapshots of a job's working directory and the difference between two of them.

The walk (``tree.walk``) goes by descriptor and never follows a symlink: a link is an entry of
its own (``lstat`` semantics), reported by its own path and never descended into, even when it
points at a directory. Each directory is opened with ``O_NOFOLLOW`` from its parent's descriptor
and checked to be the very directory the parent listed, so a job that swaps a directory for a
symlink mid-scan cannot steer the walk outside its tree; no path is handed to the OS below the
root, so a file under a path of any length is found. Entries are keyed by the absolute path
string of the file (``root`` joined with its path below it). A snapshot is bounded in entries and
seconds; hitting a bound marks it incomplete instead of hanging.

Give ``root_fd`` (a directory opened beneath the workspace root, ``tree.open_beneath``) to walk
that very directory: ``root`` then only names the entries, and a job that swaps a component of
``root``'s path for a symlink cannot redirect the scan.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from interpreter import tree

logger = logging.getLogger(__name__)


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


def _walk(
    root: Path, limits: ScanLimits, root_fd: int | None
) -> Iterator[tuple[str, os.stat_result]]:
    """(absolute path, lstat) of every entry under ``root``, walked by descriptor (``tree.walk``):
    from ``root_fd`` if given (``root`` then only names the entries), else from ``root`` opened
    without following a symlink. Nothing when it cannot be opened as a directory."""
    top = os.path.abspath(root)
    above = top.rstrip("/") + "/"
    if root_fd is None:
        try:
            fd = os.open(top, tree.DIR_FLAGS)
        except OSError:
            return
    else:
        fd = root_fd
    try:
        for relative, st in tree.walk(
            fd, max_entries=limits.max_entries, max_seconds=limits.max_seconds
        ):
            yield above + relative, st
    finally:
        if fd != root_fd:
            os.close(fd)


def scan(root: Path, limits: ScanLimits, *, root_fd: int | None = None) -> Snapshot:
    """Walk ``root`` without following symlinks, within ``limits`` (blocking)."""
    entries: dict[str, FileStat] = {}
    try:
        for full, st in _walk(root, limits, root_fd):
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                entries[full] = FileStat(st.st_size, st.st_mtime_ns, st.st_ino)
    except tree.WalkStopped as stop:
        note = f"file scan stopped after {stop.after}"
        logger.debug("%s under %s", note, root)
        return Snapshot(entries, complete=False, note=note)
    return Snapshot(entries)


_INLINE = ScanLimits(max_entries=64, max_seconds=0.002)


async def scan_async(root: Path, limits: ScanLimits, *, root_fd: int | None = None) -> Snapshot:
    """``scan`` without blocking the event loop: a small tree (most jobs leave a few files) is
    read inline within a 2 ms budget; anything larger is scanned again in a worker thread."""
    inline = ScanLimits(
        min(_INLINE.max_entries, limits.max_entries), min(_INLINE.max_seconds, limits.max_seconds)
    )
    snapshot = scan(root, inline, root_fd=root_fd)
    if snapshot.complete or inline == limits:
        return snapshot
    return await asyncio.to_thread(functools.partial(scan, root, limits, root_fd=root_fd))


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
