"""A finished job's files: what its working directory holds after the run, listed, read by byte
range and archived, from one of two sources behind one seam (``FileSource``):

- ``DiskFiles``: the directory itself (the embedded server, where the API runs the jobs);
- ``StoredFiles``: the copy a worker captured into the store when the job ended (scale-out, where
  API replicas and workers share no disk), capped per job (``CaptureLimits``).

Everything under a job's directory is hostile (see ``tree``): it is walked and opened by
descriptor beneath the directory, never following a symlink (``tree.open_beneath``,
``O_NOFOLLOW``), and only regular files are ever opened (a fifo's open would block, a device's
could do anything): symlinks, fifos, sockets, devices and names that are not UTF-8 are listed as
skipped, with the reason. The walk is bounded in entries and seconds; past its bound the listing
says it is incomplete.

Paths are relative to the working directory, '/'-separated; a requested path that is absolute,
holds '..' or goes through a symlink is simply not found.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import mimetypes
import os
import stat
import tarfile
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from interpreter import tree
from interpreter.errors import JobFileNotFound, RangeNotSatisfiable
from interpreter.job import Job
from interpreter.workspace import JobPaths

CHUNK_BYTES = 256 * 1024  # read (and sent) at a time
# Bytes a listing on disk hashes (and no longer than its scan's time bound): files past it get no
# sha256. Counted by size, not by blocks: a sparse file costs what it seems to hold.
HASH_BUDGET_BYTES = 256 * 2**20
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
TAR_BLOCK = tarfile.BLOCKSIZE
UNOPENED = "could not be opened as a regular file (changed meanwhile, or not readable)"

# The kinds of entries never opened, by their type bits.
_SPECIAL = {
    stat.S_IFLNK: ("symlink", "a symbolic link: never followed"),
    stat.S_IFIFO: ("fifo", "a named pipe: never opened"),
    stat.S_IFSOCK: ("socket", "a socket: never opened"),
    stat.S_IFCHR: ("device", "a device node: never opened"),
    stat.S_IFBLK: ("device", "a device node: never opened"),
}


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One regular file. ``created_at`` is its status-change time (Linux gives no portable
    creation time); ``sha256`` None: not hashed (past the listing's hashing budget)."""

    path: str
    size: int
    created_at: datetime
    modified_at: datetime
    sha256: str | None


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry that is not listed as a file: ``kind`` symlink, fifo, socket, device, file (a
    regular file not captured) or unknown; ``reason`` in words."""

    path: str
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Listing:
    files: tuple[FileInfo, ...] = ()
    directories: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    complete: bool = True  # False: the walk stopped at its bound (``note`` says which)
    note: str | None = None


EMPTY = Listing()


@dataclass(frozen=True, slots=True)
class FileRow:
    """One row of what a worker captured into the store (``JobStore.put_files``).

    ``kind``: "file" (``content`` holds its bytes), "directory", "note" (path "": the listing
    was incomplete, ``reason`` says why), or, with a ``reason``, the kind of a skipped entry."""

    path: str
    kind: str
    size: int | None = None
    sha256: str | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None
    reason: str | None = None
    content: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CaptureLimits:
    """What a worker copies of a job's directory into the store, and the walk's bounds."""

    max_bytes: int = 64 * 2**20
    max_files: int = 1_000
    max_entries: int = 100_000
    max_seconds: float = 5.0


# -- pure pieces ---------------------------------------------------------------------------------
def path_parts(path: str) -> list[str]:
    """The components of a requested relative path; ``JobFileNotFound`` when it is absolute,
    holds '..' or a NUL byte, ends with '/' (a directory), or names nothing."""
    if not path or "\x00" in path or path.startswith("/") or path.endswith("/"):
        raise JobFileNotFound()
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise JobFileNotFound()
    return parts


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range [start, end) that a ``Range`` header asks of a file of ``size`` bytes;
    None to send the whole file (no header, one we do not read, or several ranges: a server may
    ignore a Range). ``RangeNotSatisfiable`` when no byte of the range is in the file."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not _number(first) or not _number(last):
        return None
    if first == "":
        if last == "":
            return None
        length = int(last)  # a suffix: the last ``length`` bytes
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - length), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # last before first: not a valid range, ignored
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, size if last == "" else min(int(last) + 1, size)


def _number(text: str) -> bool:
    """Empty, or ASCII digits (``str.isdigit`` takes '²' too)."""
    return text == "" or (text.isascii() and text.isdigit())


_ENCODED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


def content_type(path: str) -> str:
    """The media type of a file, guessed from its name (``mimetypes``): a compressed file is
    its compression's type (``a.tar.gz``: application/gzip, as its bytes are);
    application/octet-stream when nothing fits."""
    guessed, encoding = mimetypes.guess_type(path, strict=False)
    if encoding is not None:
        return _ENCODED.get(encoding, "application/octet-stream")
    return guessed or "application/octet-stream"


_EARLIEST, _LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def _time(seconds: float) -> datetime:
    """A file time (a job may set any it likes), within what a datetime holds."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return _EARLIEST if seconds < 0 else _LATEST


def _printable(path: str) -> str:
    """A path as text any JSON can carry (bytes that are not UTF-8 escaped)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- the directory on disk -------------------------------------------------------------------------
def open_directory(paths: JobPaths, job: Job) -> int | None:
    """The job's working directory opened beneath the workspace root without following a
    symlink; None when it is not there (or not a directory)."""
    if job.request.working_directory is None:
        relative = job.id
    else:
        try:
            named = paths.named(job.request.working_directory)
            relative = str(named.relative_to(paths.workspace_root))
        except ValueError:
            return None
    try:
        return tree.open_beneath(paths.root_fd, relative)
    except OSError:  # missing, or swapped for a symlink or a file
        return None


def open_regular(root_fd: int, path: str) -> tuple[int, os.stat_result]:
    """A descriptor of regular file ``path`` beneath ``root_fd``, and its stat; never through a
    symlink, never opening anything but a regular file. ``JobFileNotFound`` otherwise."""
    parts = path_parts(path)
    try:
        dir_fd = tree.open_beneath(root_fd, "/".join(parts[:-1]))
    except OSError:
        raise JobFileNotFound() from None
    try:
        name = parts[-1]
        try:
            before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            raise JobFileNotFound() from None
        if not stat.S_ISREG(before.st_mode):
            raise JobFileNotFound()
        try:
            fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            raise JobFileNotFound() from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            os.close(fd)
            raise JobFileNotFound()
        return fd, st
    finally:
        os.close(dir_fd)


@dataclass
class _Survey:
    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    complete: bool = True
    note: str | None = None


def _survey(root_fd: int, max_entries: int, max_seconds: float) -> _Survey:
    """Every entry under the directory, sorted into files, directories and skipped ones."""
    survey = _Survey()
    try:
        for path, st in tree.walk(root_fd, max_entries=max_entries, max_seconds=max_seconds):
            mode = stat.S_IFMT(st.st_mode)
            if not _is_utf8(path):
                kind = "directory" if mode == stat.S_IFDIR else _SPECIAL.get(mode, ("file",))[0]
                reason = "its name is not valid UTF-8: not served"
                survey.skipped.append(Skipped(_printable(path), kind, reason))
            elif mode == stat.S_IFDIR:
                survey.directories.append(path)
            elif mode == stat.S_IFREG:
                survey.files.append((path, st))
            else:
                kind, reason = _SPECIAL.get(mode, ("unknown", "not a regular file: never opened"))
                survey.skipped.append(Skipped(path, kind, reason))
    except tree.WalkStopped as stopped:
        survey.complete = False
        survey.note = f"the listing stopped after {stopped.after}: some entries are not listed"
    survey.files.sort(key=lambda item: item[0])
    survey.directories.sort()
    return survey


def _read(fd: int, start: int, end: int) -> bytes:
    """Bytes [start, end) of ``fd`` (fewer if it shrank)."""
    chunks = []
    while start < end:
        chunk = os.pread(fd, min(CHUNK_BYTES * 4, end - start), start)
        if not chunk:
            break
        chunks.append(chunk)
        start += len(chunk)
    return b"".join(chunks)


def _hash(fd: int, size: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(1 << 20, size - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _info(path: str, st: os.stat_result, sha256: str | None) -> FileInfo:
    return FileInfo(path, st.st_size, _time(st.st_ctime), _time(st.st_mtime), sha256)


def scan(
    root_fd: int,
    max_entries: int,
    max_seconds: float,
    hash_budget: int = HASH_BUDGET_BYTES,
) -> Listing:
    """What the directory holds now, each file hashed while the hashing budget (bytes, and
    ``max_seconds`` of hashing) lasts."""
    survey = _survey(root_fd, max_entries, max_seconds)
    hash_until = time.monotonic() + max_seconds
    files = []
    skipped = list(survey.skipped)
    for path, _ in survey.files:
        try:
            fd, st = open_regular(root_fd, path)
        except JobFileNotFound:
            skipped.append(Skipped(path, "file", UNOPENED))
            continue
        try:
            sha256 = None
            if st.st_size <= hash_budget and time.monotonic() < hash_until:
                hash_budget -= st.st_size
                sha256 = _hash(fd, st.st_size)
        finally:
            os.close(fd)
        files.append(_info(path, st, sha256))
    return Listing(
        tuple(files), tuple(survey.directories), tuple(skipped), survey.complete, survey.note
    )


def capture(root_fd: int, limits: CaptureLimits) -> list[FileRow]:
    """The rows a worker stores of the directory: each file with its bytes while the caps
    (bytes, files) allow, the rest as skipped rows."""
    survey = _survey(root_fd, limits.max_entries, limits.max_seconds)
    rows = [FileRow(path, "directory") for path in survey.directories[: limits.max_files]]
    rows += [FileRow(s.path, s.kind, reason=s.reason) for s in survey.skipped[: limits.max_files]]
    unrecorded = max(0, len(survey.directories) - limits.max_files)
    unrecorded += max(0, len(survey.skipped) - limits.max_files)
    if unrecorded:
        survey.complete = False
        survey.note = (
            f"{unrecorded} directories or skipped entries beyond {limits.max_files} of each "
            "were not recorded" + (f"; {survey.note}" if survey.note else "")
        )
    total = files = 0
    for path, listed in survey.files:
        if files >= limits.max_files:
            reason = f"over the cap of {limits.max_files} captured files per job"
            rows.append(FileRow(path, "file", size=listed.st_size, reason=reason))
            continue
        if total + listed.st_size > limits.max_bytes:
            reason = (
                f"over the cap of {limits.max_bytes} captured bytes per job "
                "(INTERPRETER_MAX_CAPTURED_BYTES)"
            )
            rows.append(FileRow(path, "file", size=listed.st_size, reason=reason))
            continue
        try:
            fd, st = open_regular(root_fd, path)
        except JobFileNotFound:
            rows.append(FileRow(path, "file", reason=UNOPENED))
            continue
        try:
            content = _read(fd, 0, min(st.st_size, limits.max_bytes - total))
        finally:
            os.close(fd)
        total += len(content)
        files += 1
        rows.append(
            FileRow(
                path,
                "file",
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                created_at=_time(st.st_ctime),
                modified_at=_time(st.st_mtime),
                content=content,
            )
        )
    if not survey.complete:
        rows.append(FileRow("", "note", reason=survey.note))
    # One row a path: a name that is not UTF-8 is shown escaped, which a real name may spell.
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row.path not in seen:
            seen.add(row.path)
            unique.append(row)
    return unique


def capture_directory(paths: JobPaths, job: Job, limits: CaptureLimits) -> list[FileRow] | None:
    """``capture`` of the job's working directory; None when there is none."""
    root = open_directory(paths, job)
    if root is None:
        return None
    try:
        return capture(root, limits)
    finally:
        os.close(root)


def listing_of(rows: Sequence[FileRow]) -> Listing:
    """The listing the store's rows (without their content) describe."""
    files, directories, skipped = [], [], []
    complete, note = True, None
    for row in sorted(rows, key=lambda r: r.path):
        if row.kind == "note":
            complete, note = False, row.reason
        elif row.reason is not None:
            skipped.append(Skipped(row.path, row.kind, row.reason))
        elif row.kind == "directory":
            directories.append(row.path)
        elif row.created_at is not None and row.modified_at is not None:
            size = row.size or 0
            files.append(FileInfo(row.path, size, row.created_at, row.modified_at, row.sha256))
    return Listing(tuple(files), tuple(directories), tuple(skipped), complete, note)


# -- the seam: a finished job's files, from wherever they are ------------------------------------
class OpenFile(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def modified_at(self) -> datetime: ...

    def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end), a chunk at a time; the file is closed once they are all read
        (or the iteration is closed)."""

    async def close(self) -> None: ...


class FileSource(Protocol):
    @property
    def source(self) -> str:
        """Where the files are read: "directory", "store" or "none"."""

    async def listing(self, hashed: bool = True) -> Listing:
        """What the job's directory holds (``hashed=False``: no file read for its sha256)."""

    async def open(self, path: str) -> OpenFile:
        """``JobFileNotFound`` unless ``path`` is a regular file of the listing."""


class FileRows(Protocol):
    """What ``StoredFiles`` needs of the store (``JobStore`` has it)."""

    async def list_files(self, job_id: str) -> Sequence[FileRow]: ...

    async def read_file(self, job_id: str, path: str) -> FileRow | None: ...


class _DiskFile:
    def __init__(self, fd: int, st: os.stat_result) -> None:
        self._fd: int | None = fd
        self.size = st.st_size
        self.modified_at = _time(st.st_mtime)

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        try:
            while start < end and self._fd is not None:
                chunk = await asyncio.to_thread(
                    os.pread, self._fd, min(CHUNK_BYTES, end - start), start
                )
                if not chunk:
                    break
                start += len(chunk)
                yield chunk
        finally:
            await self.close()

    async def close(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __del__(self) -> None:  # a response never sent (its client left first)
        self._close()


class DiskFiles:
    """The files of a job in its directory on this machine (read in threads, never whole)."""

    source = "directory"

    def __init__(self, paths: JobPaths, job: Job, max_entries: int, max_seconds: float) -> None:
        self.paths = paths
        self.job = job
        self.max_entries = max_entries
        self.max_seconds = max_seconds

    def _listing(self, hash_budget: int) -> Listing:
        root = open_directory(self.paths, self.job) if self.job.result is not None else None
        if root is None:
            return EMPTY
        try:
            return scan(root, self.max_entries, self.max_seconds, hash_budget)
        finally:
            os.close(root)

    async def listing(self, hashed: bool = True) -> Listing:
        return await asyncio.to_thread(self._listing, HASH_BUDGET_BYTES if hashed else -1)

    def _open(self, path: str) -> _DiskFile:
        path_parts(path)
        root = open_directory(self.paths, self.job) if self.job.result is not None else None
        if root is None:
            raise JobFileNotFound()
        try:
            return _DiskFile(*open_regular(root, path))
        finally:
            os.close(root)

    async def open(self, path: str) -> OpenFile:
        return await asyncio.to_thread(self._open, path)


class LiveFiles:
    """The files of a directory that is still in use (a session's, while its kernel runs), read
    through ``with_root``: it calls its argument with a descriptor of the directory, in a
    thread, and answers None once the directory is gone."""

    source = "directory"

    def __init__(
        self,
        with_root: Callable[[Callable[[int], Any]], Any],
        max_entries: int,
        max_seconds: float,
    ) -> None:
        self.with_root = with_root
        self.max_entries = max_entries
        self.max_seconds = max_seconds

    async def listing(self, hashed: bool = True) -> Listing:
        budget = HASH_BUDGET_BYTES if hashed else -1
        found = await asyncio.to_thread(
            self.with_root, lambda root: scan(root, self.max_entries, self.max_seconds, budget)
        )
        return found if isinstance(found, Listing) else EMPTY

    async def open(self, path: str) -> OpenFile:
        path_parts(path)
        opened = await asyncio.to_thread(
            self.with_root, lambda root: _DiskFile(*open_regular(root, path))
        )
        if not isinstance(opened, _DiskFile):
            raise JobFileNotFound()
        return opened


class _StoredFile:
    def __init__(self, row: FileRow) -> None:
        assert row.content is not None and row.modified_at is not None
        self._content = memoryview(row.content)
        self.size = len(row.content)
        self.modified_at = row.modified_at

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        for offset in range(start, end, CHUNK_BYTES):
            yield bytes(self._content[offset : min(end, offset + CHUNK_BYTES)])

    async def close(self) -> None:
        return None


class StoredFiles:
    """The files a worker captured into the store when the job ended."""

    source = "store"

    def __init__(self, store: FileRows, job_id: str) -> None:
        self.store = store
        self.job_id = job_id

    async def listing(self, hashed: bool = True) -> Listing:
        return listing_of(await self.store.list_files(self.job_id))

    async def open(self, path: str) -> OpenFile:
        wanted = "/".join(path_parts(path))
        row = await self.store.read_file(self.job_id, wanted)
        if row is None or row.kind != "file" or row.reason is not None or row.content is None:
            raise JobFileNotFound()
        return _StoredFile(row)


class NoFiles:
    """A job that never ran: nothing to list."""

    source = "none"

    async def listing(self, hashed: bool = True) -> Listing:
        return EMPTY

    async def open(self, path: str) -> OpenFile:
        path_parts(path)
        raise JobFileNotFound()


# -- the archive -----------------------------------------------------------------------------------
def _header(name: str, kind: bytes, size: int, mode: int, mtime: datetime) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.mtime = int(mtime.timestamp())
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def within(listing: Listing, max_bytes: int) -> tuple[Listing, int]:
    """``listing`` with its files in path order while their sizes add up to at most
    ``max_bytes`` (an archive's budget: sparse files cost their size), and how many were left
    out."""
    kept: list[FileInfo] = []
    for info in listing.files:
        if info.size > max_bytes:
            continue
        max_bytes -= info.size
        kept.append(info)
    return dataclasses.replace(listing, files=tuple(kept)), len(listing.files) - len(kept)


async def archive(source: FileSource, listing: Listing, now: datetime) -> AsyncIterator[bytes]:
    """``listing``'s directories and regular files as a gzipped tar stream, a chunk at a time (a
    file read and compressed in threads; a file gone meanwhile is left out, one that changed
    size is cut or padded to the size its header gave)."""
    gz = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = b"".join(
        gz.compress(_header(directory + "/", tarfile.DIRTYPE, 0, 0o755, now))
        for directory in listing.directories
    )
    if out:
        yield out
    for info in listing.files:
        try:
            opened = await source.open(info.path)
        except JobFileNotFound:
            continue
        size = opened.size
        header = _header(info.path, tarfile.REGTYPE, size, 0o644, opened.modified_at)
        sent = 0
        pending = [header]
        async for chunk in opened.chunks(0, size):
            pending.append(chunk)
            sent += len(chunk)
            out = await asyncio.to_thread(gz.compress, b"".join(pending))
            pending = []
            if out:
                yield out
        missing = size - sent  # it shrank meanwhile: zeros, as its header promised
        pending.append(b"\0" * (-size % TAR_BLOCK))
        while missing > 0:
            pending.append(b"\0" * min(missing, CHUNK_BYTES))
            missing -= CHUNK_BYTES
            out = gz.compress(b"".join(pending))
            pending = []
            if out:
                yield out
        out = gz.compress(b"".join(pending))
        if out:
            yield out
    yield gz.compress(b"\0" * (2 * TAR_BLOCK)) + gz.flush()
