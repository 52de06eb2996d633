"""Host-side operations on directory trees a job wrote, by descriptor only.

Anything under a job's directory is hostile: an entry may be a symlink, a fifo or a device, a
directory may be swapped for a symlink between two system calls, names may hold newlines or
bytes that are not UTF-8, and a chain of directories may be deeper than any path or descriptor
limit. So every function here:

- works relative to an open directory (``dir_fd=``, ``O_NOFOLLOW``) and never builds an OS path
  from the root: no path length limit, and a path is only ever a string for reporting;
- never follows a symlink: a link is an entry of its own, listed, deleted or copied as a link;
- recurses nowhere: a loop with an explicit stack walks a tree of any depth;
- holds a few descriptors whatever the depth (``_Cursor``: only the directory it is in).

Errors::

    OSError
    ├── UnsafePath          a component is a symlink or not a directory, or the path leaves its root
    └── FileNotFoundError   (the standard one) a component does not exist
    WalkStopped             a walk spent its budget of entries or seconds

Why one module of ~900 lines: every host-side walk shares the same descriptor discipline
(open beneath, never follow, bounded descriptors at any depth); splitting it would spread the one
set of rules a security review must check.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import secrets
import stat
import time
from collections.abc import Generator, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "UnsafePath",
    "WalkStopped",
    "apply_overlay_upper",
    "chown_tree",
    "open_beneath",
    "remove_path",
    "remove_tree",
    "walk",
    "write_file_beneath",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REASONS = {
    errno.ELOOP: "a component is a symlink",
    errno.ENOTDIR: "a component is a symlink or not a directory",
    errno.EXDEV: "the path leads out of its root",
}


class UnsafePath(OSError):
    """A component of the path is a symlink or not a directory, or the path leaves its root."""


class WalkStopped(Exception):
    """A walk spent its budget; ``after`` says which bound ("10 entries", "5 s")."""

    def __init__(self, after: str) -> None:
        self.after = after
        super().__init__(f"walk stopped after {after}")


# -- opening a directory beneath a root ----------------------------------------------------------
# openat2(2) resolves the whole path in the kernel, refusing symlinks and escapes (Linux 5.6+; the
# same number, 437, on every architecture we run on). Without it each component is opened in turn
# with O_NOFOLLOW | O_DIRECTORY from the previous one: a single name can neither be '..' (refused
# before) nor go through a symlink, so that is as safe, only one system call per component.
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(platform.machine())
# Not RESOLVE_NO_XDEV: a job cannot mount anything in the host's namespace, so a mount point
# beneath a root is one the host made on purpose (a volume), and the fallback could not tell a
# mount from a btrfs subvolume by st_dev alike.
_RESOLVE = 0x08 | 0x04 | 0x02  # RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_PATH_CHUNK = 4000  # openat2 takes at most PATH_MAX (4096) bytes: a longer path goes in pieces


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long
_openat2_missing = _SYS_OPENAT2 is None


def open_beneath(
    root_fd: int, relative: str, *, create: bool = False, mode: int = 0o700, repair: bool = False
) -> int:
    """A new descriptor (``O_RDONLY | O_DIRECTORY``) of directory ``relative`` beneath ``root_fd``
    (which may be ``O_PATH``).

    No component may be a symlink, '..' or absolute; ``create`` makes each missing component
    (``mode``, less the umask). Raises ``UnsafePath`` when a component is a symlink or not a
    directory or the path leaves the root, ``FileNotFoundError`` when a component is missing.
    ``repair``: a component we may not open (its owner took its own permissions away: ``chmod
    000``) gets u+rwx back, when we own it, through a descriptor of that very directory.
    """
    global _openat2_missing
    parts = _components(relative)
    try:
        if not parts:
            return os.open(".", DIR_FLAGS, dir_fd=root_fd)
        if create or repair or _openat2_missing:
            return _open_each(root_fd, parts, create, mode, repair)
        try:
            return _open_chunks(root_fd, parts)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter's answer
                raise
            _openat2_missing = exc.errno == errno.ENOSYS
            return _open_each(root_fd, parts, False, mode)
    except OSError as exc:
        if exc.errno in _REASONS:
            raise UnsafePath(exc.errno, _REASONS[exc.errno], relative) from exc
        raise OSError(exc.errno, exc.strerror, relative) from exc


def _components(relative: str) -> list[str]:
    if "\x00" in relative:
        raise UnsafePath(errno.EINVAL, "the path holds a NUL byte", relative)
    if relative.startswith("/"):
        raise UnsafePath(errno.EXDEV, "the path is absolute", relative)
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(errno.EXDEV, "the path holds '..'", relative)
    return parts


def _open_chunks(root_fd: int, parts: list[str]) -> int:
    fd = root_fd
    try:
        for chunk in _chunks(parts):
            opened = _openat2(fd, chunk)
            if fd != root_fd:
                os.close(fd)
            fd = opened
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise
    return fd


def _chunks(parts: list[str]) -> Iterator[bytes]:
    chunk: list[bytes] = []
    size = 0
    for part in map(os.fsencode, parts):
        if chunk and size + len(part) + 1 > _PATH_CHUNK:
            yield b"/".join(chunk)
            chunk, size = [], 0
        chunk.append(part)
        size += len(part) + 1
    yield b"/".join(chunk)


def _openat2(dir_fd: int, path: bytes) -> int:
    how = _OpenHow(DIR_FLAGS, 0, _RESOLVE)
    for _ in range(3):  # EAGAIN: a rename raced the lookup
        fd = _syscall(
            ctypes.c_long(_SYS_OPENAT2 or -1),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            break
    raise OSError(err, os.strerror(err))


def _open_each(
    root_fd: int, parts: list[str], create: bool, mode: int, repair: bool = False
) -> int:
    fd = root_fd
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # opened below, refused there if it is not a directory
            try:
                opened = _open_dir(part, fd)
            except PermissionError:
                if not repair or not _open_up(fd, part):
                    raise
                logger.warning("directory %r was closed to its owner: u+rwx restored", part)
                opened = _open_dir(part, fd)
            if fd != root_fd:
                os.close(fd)
            fd = opened
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise
    return fd


def _open_dir(name: str, dir_fd: int) -> int:
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def write_file_beneath(
    root_fd: int, relative: str, content: bytes, *, mode: int = 0o644, dir_mode: int = 0o755
) -> None:
    """Write ``content`` as file ``relative`` (``mode``) beneath ``root_fd``, making missing
    parent directories (``dir_mode``, less the umask), replacing a file there.

    Never through a symlink: a parent that is one raises ``UnsafePath``, and so does a symlink
    at the file's own name (never followed, never replaced). The content goes to a new file
    that is then renamed over the name: a file already there is replaced, never written into
    (it could be a hard link to a file elsewhere). A directory at the name raises
    ``IsADirectoryError``."""
    parts = _components(relative)
    if not parts:
        raise UnsafePath(errno.EINVAL, "the path names no file", relative)
    parent = open_beneath(root_fd, "/".join(parts[:-1]), create=True, mode=dir_mode)
    name = parts[-1]
    try:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise UnsafePath(errno.ELOOP, _REASONS[errno.ELOOP], relative)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), relative)
        temp, fd = _temp_file(parent)
        try:
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            _discard(parent, temp)
            raise
    finally:
        os.close(parent)


# -- moving through a tree with one descriptor ---------------------------------------------------
class _Cursor:
    """A place in the tree under ``base`` (the caller's descriptor, never closed here).

    Only the directory it is in is open; the way down is remembered as (name, dev, ino). Going up
    opens '..' of that directory and takes it only if it is the very directory (dev, ino) we came
    down from: the same guarantee as holding its descriptor all along (a held descriptor, too,
    follows a directory wherever it is moved). If it is not (moved, replaced, deleted), the way
    is walked again from ``base`` by name, every identity checked, stopping at the deepest
    directory still there. So a walk holds at most three descriptors of its own (during a step
    two, plus the one a listing duplicates) at any depth.
    """

    def __init__(self, base_fd: int) -> None:
        self.base = base_fd
        self.fd = base_fd
        self.chain: list[tuple[str, int, int]] = []

    def descend(self, name: str, expect: tuple[int, int] | None = None) -> os.stat_result | None:
        """Enter subdirectory ``name``: None, not entered, if it is not ``expect`` (dev, ino);
        OSError if it cannot be opened as a directory without following a link."""
        fd = _open_dir(name, self.fd)
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if expect is not None and (st.st_dev, st.st_ino) != expect:
            os.close(fd)
            return None
        self._move(fd)
        self.chain.append((name, st.st_dev, st.st_ino))
        return st

    def ascend(self) -> int:
        """Go up one level; the depth reached, less than expected if the parent was lost."""
        self.chain.pop()
        if not self.chain:
            self._move(self.base)
            return 0
        fd = _open_checked("..", self.fd, self.chain[-1])
        self._move(self._walk_down() if fd is None else fd)
        return len(self.chain)

    def close(self) -> None:
        self._move(self.base)
        self.chain.clear()

    def _walk_down(self) -> int:
        fd = self.base
        for depth, link in enumerate(self.chain):
            opened = _open_checked(link[0], fd, link)
            if opened is None:
                del self.chain[depth:]
                break
            if fd != self.base:
                os.close(fd)
            fd = opened
        return fd

    def _move(self, fd: int) -> None:
        if self.fd not in (self.base, fd):
            os.close(self.fd)
        self.fd = fd


def _open_checked(name: str, dir_fd: int, link: tuple[str, int, int]) -> int | None:
    try:
        fd = _open_dir(name, dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        st = None
    if st is None or (st.st_dev, st.st_ino) != link[1:]:
        os.close(fd)
        return None
    return fd


# -- walking ---------------------------------------------------------------------------------
class _Budget:
    def __init__(self, max_entries: int | None, max_seconds: float | None) -> None:
        self._max_entries = max_entries
        self._max_seconds = max_seconds
        self._deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self._seen = 0

    def tick(self) -> None:
        self._seen += 1
        if self._max_entries is not None and self._seen > self._max_entries:
            raise WalkStopped(f"{self._max_entries} entries")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise WalkStopped(f"{self._max_seconds:g} s")


def walk(
    root_fd: int, *, max_entries: int | None = None, max_seconds: float | None = None
) -> Generator[tuple[str, os.stat_result], None, None]:
    """Every entry under directory ``root_fd`` (readable: not ``O_PATH``), not the root itself,
    as (relative path, lstat).

    Symlinks are entries, never descended; a directory replaced since its parent was listed is
    skipped. Raises ``WalkStopped`` past ``max_entries`` entries or ``max_seconds`` seconds.
    """
    budget = None
    if max_entries is not None or max_seconds is not None:
        budget = _Budget(max_entries, max_seconds)
    cursor = _Cursor(root_fd)
    entries = _entries(cursor, budget, paths=True)
    try:
        for prefix, name, st in entries:
            yield prefix + name, st
    finally:
        entries.close()
        cursor.close()


def chown_tree(root_fd: int, uid: int, gid: int) -> int:
    """Give ``uid``:``gid`` to the root (readable: not ``O_PATH``) and every entry under it not
    owned so (links themselves, never their targets; never a file with more than one name,
    which could be another's file linked in); the number of entries changed."""
    changed = 0
    st = os.fstat(root_fd)
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(root_fd, uid, gid)
        changed += 1
    cursor = _Cursor(root_fd)
    entries = _entries(cursor, None, paths=False)
    try:
        for _, name, st in entries:
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                continue  # a hard link's other names may lie outside the tree: never hand it on
            if (st.st_uid, st.st_gid) != (uid, gid):
                try:
                    os.chown(name, uid, gid, dir_fd=cursor.fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                changed += 1
    finally:
        entries.close()
        cursor.close()
    return changed


def _entries(
    cursor: _Cursor, budget: _Budget | None, paths: bool
) -> Generator[tuple[str, str, os.stat_result], None, None]:
    """(directory prefix, name, lstat) of every entry under the cursor's base, each directory's
    entries before its subdirectories'; ``cursor.fd`` is the entry's directory while it is
    yielded. The prefix ("a/b/") is kept only if ``paths``: it costs a copy per directory."""
    pending: list[list[tuple[str, int, int]]] = [[]]  # per level: subdirectories still to visit
    prefix, cuts = "", [0]
    listing = True
    while True:
        if listing:
            subdirs = pending[-1]
            try:
                with os.scandir(cursor.fd) as found:
                    for entry in found:
                        if budget is not None:
                            budget.tick()
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # vanished meanwhile
                        yield prefix, entry.name, st
                        if stat.S_ISDIR(st.st_mode):
                            subdirs.append((entry.name, st.st_dev, st.st_ino))
            except OSError:
                pass  # deleted or unreadable: what was listed stands
        if pending[-1]:
            name, dev, ino = pending[-1].pop()
            try:
                listing = cursor.descend(name, (dev, ino)) is not None
            except OSError:
                listing = False  # gone, or no longer a directory
            if listing:
                pending.append([])
                if paths:
                    cuts.append(len(prefix))
                    prefix = f"{prefix}{name}/"
            continue
        if len(pending) == 1:
            return
        depth = cursor.ascend()
        del pending[depth + 1 :]
        if paths:
            prefix = prefix[: cuts[depth + 1]]
            del cuts[depth + 1 :]
        listing = False


# -- removing ----------------------------------------------------------------------------------
_REMOVE_ROUNDS = 3  # a directory still not empty after this many passes is left, and said so


def remove_tree(parent_fd: int, name: str) -> None:
    """Delete entry ``name`` of directory ``parent_fd`` (may be ``O_PATH``) and all under it.

    Never follows a link: a directory swapped for a symlink loses the link, not its target.
    Entries that vanish meanwhile are fine; a directory that denies its owner access is opened
    up (u+rwx) to be emptied. Raises ``OSError`` (the first failure met) if ``name`` is still
    there at the end; a missing ``name`` is not an error.
    """
    _check_name(name)
    cursor = _Cursor(parent_fd)
    failures: list[OSError] = []
    # per level: passes over this directory so far, failures before we entered it, and the
    # subdirectories still to remove, each with its passes so far
    levels: list[tuple[int, int, list[tuple[str, int]]]] = [(0, 0, [(name, 0)])]
    try:
        while True:
            rounds, failed_before, todo = levels[-1]
            if todo:
                entry, entry_rounds = todo.pop()
                before = len(failures)
                subdirs = _enter_and_clear(cursor, entry, failures)
                if subdirs is not None:
                    levels.append((entry_rounds, before, [(subdir, 0) for subdir in subdirs]))
                continue
            if len(levels) == 1:
                break
            leaving = cursor.chain[-1][0]
            levels.pop()
            depth = cursor.ascend()
            if depth != len(levels) - 1:
                del levels[depth + 1 :]  # lost our way back up: that part stays
                continue
            if _remove_dir(cursor.fd, leaving, failures):
                continue
            if len(failures) == failed_before and rounds + 1 < _REMOVE_ROUNDS:
                levels[-1][2].append((leaving, rounds + 1))  # filled meanwhile: another pass
            elif len(failures) == failed_before:  # else its parents need not try again either
                failures.append(OSError(errno.ENOTEMPTY, "still not empty", leaving))
    finally:
        cursor.close()
    try:
        os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if failures:
        raise failures[0]
    raise OSError(errno.ENOTEMPTY, "could not empty the directory", name)


def remove_path(path: Path) -> None:
    """``remove_tree`` of ``path``: its own components are trusted, only what is below is not."""
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        remove_tree(parent, path.name)
    finally:
        os.close(parent)


def _check_name(name: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise ValueError(f"not a directory entry name: {name!r}")


def _enter_and_clear(cursor: _Cursor, name: str, failures: list[OSError]) -> list[str] | None:
    """Enter directory ``name`` and delete every non-directory in it: its subdirectories. None
    when not entered: ``name`` was not a directory (then it is unlinked), vanished, or failed."""
    for attempt in range(2):
        try:
            cursor.descend(name)
            break
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # a link or a file: unlink it
                _unlink(cursor.fd, name, failures)
                return None
            if exc.errno != errno.EACCES or attempt or not _open_up(cursor.fd, name):
                failures.append(exc)
                return None
    here = os.fstat(cursor.fd)
    if here.st_mode & 0o700 != 0o700:
        try:
            os.fchmod(cursor.fd, stat.S_IMODE(here.st_mode) | 0o700)
        except OSError as exc:
            failures.append(exc)
    subdirs = []
    try:
        with os.scandir(cursor.fd) as found:
            for entry in found:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir or not _unlink(cursor.fd, entry.name, failures):
                    subdirs.append(entry.name)
    except OSError as exc:
        failures.append(exc)
    return subdirs


def _unlink(dir_fd: int, name: str, failures: list[OSError]) -> bool:
    """Unlink a non-directory; False if it turned out to be a directory."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        return False
    except OSError as exc:
        failures.append(exc)
    return True


def _remove_dir(dir_fd: int, name: str, failures: list[OSError]) -> bool:
    """rmdir ``name`` (unlink it if it is no longer a directory); False if it is not empty."""
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        _unlink(dir_fd, name, failures)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        failures.append(exc)
    return True


def _open_up(dir_fd: int, name: str) -> bool:
    """u+rwx on directory ``name``, which we may not read: through an O_PATH descriptor of it (a
    directory, not a link: O_DIRECTORY | O_NOFOLLOW) and its /proc/self/fd entry."""
    try:
        fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(os.fstat(fd).st_mode) | 0o700)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# -- applying an overlayfs upper layer to its lower directory ---------------------------------
_OPAQUE = "trusted.overlay.opaque"
_COPY_CHUNK = 1 << 30  # per copy_file_range call
_NO_FAST_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def apply_overlay_upper(
    upper_fd: int,
    lower_fd: int,
    *,
    uid: int | None = None,
    gid: int | None = None,
    budget: tuple[int, int] | None = None,
) -> None:
    """Make the tree at ``lower_fd`` what an overlay mount of ``upper_fd`` over it showed
    (redirect_dir, metacopy and index off); both readable descriptors, not ``O_PATH``.

    A whiteout (character device 0:0) deletes the lower entry; an opaque upper directory
    (``trusted.overlay.opaque`` = "y") replaces the lower one's contents, another merges into it;
    a regular file or symlink replaces the lower entry atomically (rename over it). Fifos,
    sockets and devices are not copied; the lower entry of their name is deleted, as the mount
    did not show it. Permission bits (no setuid/setgid) and times are kept; every entry written
    gets ``uid``/``gid`` when given. Files keep their holes.

    ``budget``: (bytes, entries); ``OverBudget`` before anything is written when the copy would
    allocate more (``copy_cost``): what a filesystem capped the job to stays capped on the host.
    """
    if budget is not None:
        cost, entries = copy_cost(upper_fd)
        if cost > budget[0] or entries > budget[1]:
            raise OverBudget(
                errno.ENOSPC, f"the copy would take {cost} bytes in {entries} files and directories"
            )
    owner = (-1 if uid is None else uid, -1 if gid is None else gid)
    upper, lower = _Cursor(upper_fd), _Cursor(lower_fd)
    links = _Links(lower_fd)
    try:
        if _is_opaque(upper_fd):
            _empty(lower_fd)
        levels = [(os.fstat(upper_fd), _apply_entries(upper_fd, lower, owner, links))]
        while levels:
            here, subdirs = levels[-1]
            if subdirs:
                name, identity = subdirs.pop()
                st = upper.descend(name, identity)
                if st is None:
                    raise OSError(errno.ESTALE, "upper directory replaced while applied", name)
                _enter_lower(lower, name, opaque=_is_opaque(upper.fd))
                levels.append((st, _apply_entries(upper.fd, lower, owner, links)))
                continue
            _set_attributes(lower.fd, here, owner, 0o1777)  # after its entries: keeps mtime
            levels.pop()
            if levels:
                for cursor in (upper, lower):
                    if cursor.ascend() != len(levels) - 1:
                        raise OSError(errno.ESTALE, "directory moved while the overlay was applied")
    finally:
        upper.close()
        lower.close()


class _Links:
    """The files of an upper layer with more than one name, as copied to the lower tree: each
    is copied once, its other names linked to that copy (as the job's filesystem held them,
    and as its limit counted them: once)."""

    def __init__(self, lower_root: int) -> None:
        self.lower_root = lower_root
        # upper (dev, ino) -> (lower directory relative to the root, name, lower (dev, ino))
        self.copies: dict[tuple[int, int], tuple[str, str, tuple[int, int]]] = {}

    def link(self, upper: tuple[int, int], lower_fd: int, name: str) -> bool:
        """Give the copy of ``upper`` the name ``name`` in ``lower_fd``; False when there is
        no such copy (or it cannot be linked: then the caller copies the file apart)."""
        copy = self.copies.get(upper)
        if copy is None:
            return False
        directory, first, identity = copy
        try:
            dir_fd = open_beneath(self.lower_root, directory)
        except OSError:
            return False
        try:
            st = os.stat(first, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != identity:
                return False
            while True:
                temp = _temp_name()
                try:
                    os.link(
                        first, temp, src_dir_fd=dir_fd, dst_dir_fd=lower_fd, follow_symlinks=False
                    )
                    break
                except FileExistsError:
                    continue
        except OSError as exc:
            logger.debug("hard link %r not kept, copied apart: %s", name, exc)
            return False
        finally:
            os.close(dir_fd)
        try:
            _rename_over(lower_fd, temp, name)
        finally:
            _discard(lower_fd, temp)  # a rename between two names of one file leaves both
        return True


def _apply_entries(
    upper_fd: int, lower: _Cursor, owner: tuple[int, int], links: _Links
) -> list[tuple[str, tuple[int, int]]]:
    """Apply the non-directories of one upper directory; its subdirectories, to do next."""
    lower_fd = lower.fd
    with os.scandir(upper_fd) as found:
        entries = [(entry.name, entry.stat(follow_symlinks=False)) for entry in found]
    subdirs = []
    for name, st in entries:
        if stat.S_ISDIR(st.st_mode):
            subdirs.append((name, (st.st_dev, st.st_ino)))
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and links.link(key, lower_fd, name):
                continue
            copied = _copy_file(upper_fd, lower_fd, name, owner)
            if st.st_nlink > 1 and copied is not None and key not in links.copies:
                here = "/".join(link[0] for link in lower.chain)
                links.copies[key] = (here, name, copied)
        elif stat.S_ISLNK(st.st_mode):
            _copy_symlink(upper_fd, lower_fd, name, st, owner)
        else:
            if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
                logger.debug("special file not copied from the upper layer: %r", name)
            remove_tree(lower_fd, name)  # a whiteout; or a fifo, socket or device
    return subdirs


def _is_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, _OPAQUE) == b"y"
    except OSError:
        return False


def _empty(fd: int) -> None:
    with os.scandir(fd) as found:
        names = [entry.name for entry in found]
    for name in names:
        remove_tree(fd, name)


def _enter_lower(lower: _Cursor, name: str, opaque: bool) -> None:
    try:
        st: os.stat_result | None = os.stat(name, dir_fd=lower.fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        remove_tree(lower.fd, name)
        st = None
    if st is None:
        os.mkdir(name, 0o700, dir_fd=lower.fd)
    lower.descend(name)
    if opaque and st is not None:
        _empty(lower.fd)


def _copy_file(
    upper_fd: int, lower_fd: int, name: str, owner: tuple[int, int]
) -> tuple[int, int] | None:
    """Copy regular file ``name``; the copy's (dev, ino), None if it was not a regular file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a fifo must not block
    src = os.open(name, flags, dir_fd=upper_fd)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            logger.debug("upper entry no longer a regular file: %r", name)
            return None
        temp, dst = _temp_file(lower_fd)
        try:
            try:
                _copy_data(src, dst)
                _set_attributes(dst, st, owner, 0o777)
                copied = os.fstat(dst)
            finally:
                os.close(dst)
            _rename_over(lower_fd, temp, name)
        except BaseException:
            _discard(lower_fd, temp)
            raise
        return copied.st_dev, copied.st_ino
    finally:
        os.close(src)


def _copy_symlink(
    upper_fd: int, lower_fd: int, name: str, st: os.stat_result, owner: tuple[int, int]
) -> None:
    target = os.readlink(name, dir_fd=upper_fd)
    while True:
        temp = _temp_name()
        try:
            os.symlink(target, temp, dir_fd=lower_fd)
            break
        except FileExistsError:
            continue
    try:
        if owner != (-1, -1):
            os.chown(temp, *owner, dir_fd=lower_fd, follow_symlinks=False)
        times = (st.st_atime_ns, st.st_mtime_ns)
        os.utime(temp, ns=times, dir_fd=lower_fd, follow_symlinks=False)
        _rename_over(lower_fd, temp, name)
    except BaseException:
        _discard(lower_fd, temp)
        raise


def _set_attributes(fd: int, st: os.stat_result, owner: tuple[int, int], mask: int) -> None:
    if owner != (-1, -1):
        os.fchown(fd, *owner)
    os.fchmod(fd, stat.S_IMODE(st.st_mode) & mask)
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _temp_name() -> str:
    return f".overlay-{secrets.token_hex(8)}"


def _temp_file(dir_fd: int) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        name = _temp_name()
        try:
            return name, os.open(name, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue


def _rename_over(dir_fd: int, temp: str, name: str) -> None:
    try:
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except IsADirectoryError:
        remove_tree(dir_fd, name)  # a file replaces a lower directory
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _discard(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _copy_data(src: int, dst: int) -> None:
    """Copy ``src`` to ``dst``, its holes kept (a sparse file must not grow into real zeros on
    the host): only the ranges that hold data, then the size."""
    size = os.fstat(src).st_size
    offset = 0
    while offset < size:
        try:
            data = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here to the end
                break
            raise
        hole = os.lseek(src, data, os.SEEK_HOLE)
        _copy_range(src, dst, data, hole)
        offset = hole
    os.ftruncate(dst, size)


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Copy bytes [start, end) to the same offsets: in the kernel if it can, else by hand."""
    while start < end:
        try:
            copied = os.copy_file_range(src, dst, min(end - start, _COPY_CHUNK), start, start)
        except OSError as exc:
            if exc.errno not in _NO_FAST_COPY:
                raise
            break
        if copied == 0:
            return  # the file shrank meanwhile
        start += copied
    while start < end:
        chunk = os.pread(src, min(end - start, 1 << 20), start)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dst, view, start)
            start += written
            view = view[written:]


class OverBudget(OSError):
    """Applying an upper layer would write more than its budget (sparse files and hard links
    take more once copied than on the upper layer's filesystem)."""


def copy_cost(upper_fd: int) -> tuple[int, int]:
    """(bytes, entries) ``apply_overlay_upper`` would allocate for the tree at ``upper_fd``:
    each file, directory and symlink its allocated blocks and an inode, a file of several names
    once (its names are linked to one copy, as on the job's filesystem); whiteouts and other
    special files nothing (they are not copied)."""
    total = entries = 0
    linked: set[tuple[int, int]] = set()
    for _, st in walk(upper_fd):
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in linked:
                    continue
                linked.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            entries += 1
    return total, entries
