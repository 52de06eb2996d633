"""Where a job runs: a fresh directory per job, or a named one inside the workspace root.

Named working directories belong to the API key that names them: with authentication, key A's
``project`` is ``<root>/tenants/<A's id>/project`` and key B's is another directory, so no key
reaches another's files by naming them (or another's job id). Without authentication every
caller shares the root, as one tenant.

A request's ``working_directory`` is checked as text at submission (no ``..``, inside the root);
the directory itself is opened only by descriptor, beneath the root, never following a symlink
(``tree.open_beneath``), when the job starts: nothing a job can swap between a check and a use.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path, PurePosixPath

from interpreter import tree
from interpreter.errors import InvalidWorkingDirectory

logger = logging.getLogger(__name__)

TENANTS = "tenants"
MAX_WORKING_DIRECTORY_CHARS = 1024


def tenant_prefix(owner: str | None) -> PurePosixPath:
    """Where an owner's named directories live beneath the root ('' without authentication)."""
    return PurePosixPath(TENANTS, owner[:32]) if owner is not None else PurePosixPath()


def named_directory(root: Path, requested: str, owner: str | None) -> Path:
    """The path of the working directory ``requested`` names for ``owner``: relative paths are
    taken from the owner's part of the root, as are absolute ones inside the root (another
    owner's absolute path is simply a directory of this owner's). Text checks only; the
    message never shows the server's paths."""
    if "\x00" in requested:
        raise InvalidWorkingDirectory("working_directory must not contain NUL bytes")
    if len(requested) > MAX_WORKING_DIRECTORY_CHARS:
        raise InvalidWorkingDirectory(
            f"working_directory must be at most {MAX_WORKING_DIRECTORY_CHARS} characters"
        )
    path = PurePosixPath(requested)
    if ".." in path.parts:
        raise InvalidWorkingDirectory(
            f"working_directory {requested!r} must not contain '..' components; use a path "
            "inside the workspace root"
        )
    if path.is_absolute():
        try:
            path = path.relative_to(PurePosixPath(os.path.realpath(root)))
        except ValueError:
            try:
                path = path.relative_to(PurePosixPath(root))
            except ValueError:
                raise InvalidWorkingDirectory(
                    f"working_directory {requested!r} is outside the workspace root; use a "
                    "path relative to it"
                ) from None
    relative = PurePosixPath(*(part for part in path.parts if part not in ("", ".")))
    if not relative.parts:
        raise InvalidWorkingDirectory(
            f"working_directory {requested!r} names the workspace root itself; name a "
            "directory inside it"
        )
    if any(len(os.fsencode(part)) > 255 for part in relative.parts):
        raise InvalidWorkingDirectory("working_directory has a component longer than 255 bytes")
    return root / tenant_prefix(owner) / relative


def _restore_owner_access(fd: int) -> None:
    """u+rwx on the directory open as ``fd`` when we own it and it lacks some (``chmod 500 .``
    by a job): a job starts in a directory it can write, as it was made."""
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and st.st_mode & 0o700 != 0o700:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
        logger.warning("a working directory was closed to its owner: u+rwx restored")


class JobPaths:
    """Where each of a job's files lives under the data directory."""

    def __init__(self, data_dir: Path, workspace_root: Path) -> None:
        self.data_dir = data_dir
        self.workspace_root = workspace_root
        self.outputs = data_dir / "outputs"
        self.scratch_root = data_dir / "scratch"
        self._root_fd: int | None = None

    def ensure(self) -> None:
        """Make the server's directories, closed to everyone else (jobs reach their own
        directory through the sandbox's binds, never through these paths)."""
        for path in (self.data_dir, self.workspace_root, self.outputs, self.scratch_root):
            path.mkdir(parents=True, exist_ok=True)
            if path.stat().st_uid == os.geteuid():
                path.chmod(0o700)

    @property
    def root_fd(self) -> int:
        """The workspace root, open for as long as the server runs."""
        if self._root_fd is None:
            self.workspace_root.mkdir(parents=True, exist_ok=True)
            self._root_fd = os.open(self.workspace_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._root_fd

    def close(self) -> None:
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None

    def remove_transient(self) -> None:
        """Empty the output and scratch directories (scale-out: outputs live in the store, so
        what a previous process left here is a dead job's; the data-dir lock says none runs)."""
        for directory in (self.outputs, self.scratch_root):
            for entry in list(directory.iterdir()):
                try:
                    tree.remove_path(entry)
                except OSError as exc:
                    logger.warning("%s left in place: %s", entry.name, exc)

    def workspace(self, job_id: str) -> Path:
        """The fresh directory of a job that named no working_directory."""
        return self.workspace_root / job_id

    def named(self, stored: str) -> Path:
        """Where a job's named working directory is on this machine: the request holds it
        relative to the workspace root (each server or worker has its own root: the same
        shared directory may be mounted anywhere); an absolute path is an older version's."""
        path = Path(stored)
        return path if path.is_absolute() else self.workspace_root / path

    def check_named(self, path: Path) -> None:
        """``InvalidWorkingDirectory`` if what is at ``path`` now could never be a working
        directory (a symlink or a file on the way); a missing directory is fine."""
        try:
            fd = self.open_named(path, create=False)
        except FileNotFoundError:
            return
        os.close(fd)

    def open_named(self, path: Path, create: bool = True) -> int:
        """Open (making it if missing) the named directory at ``path``, beneath the root."""
        try:
            relative = path.relative_to(self.workspace_root)
        except ValueError:
            message = "working_directory is outside the workspace root"
            raise InvalidWorkingDirectory(message) from None
        try:
            # repair: a job may have taken its directory's permissions away (``chmod 000 .``);
            # its next job must still start there (the job's files are its own business)
            fd = tree.open_beneath(
                self.root_fd, str(relative), create=create, mode=0o700, repair=True
            )
        except tree.UnsafePath as exc:
            raise InvalidWorkingDirectory(
                f"working_directory {str(relative)!r} is not a plain directory inside the "
                f"workspace root ({exc})"
            ) from exc
        try:
            _restore_owner_access(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_fresh(self, job_id: str, again: bool) -> int:
        """Make and open the job's own empty directory (``again``: a re-run, after a lost worker,
        starts from an empty one)."""
        if again:
            tree.remove_tree(self.root_fd, job_id)
        os.mkdir(job_id, 0o700, dir_fd=self.root_fd)
        return os.open(job_id, tree.DIR_FLAGS, dir_fd=self.root_fd)

    def remove_workspace(self, job_id: str) -> None:
        """Delete a job's fresh directory, whatever it holds, without following anything."""
        tree.remove_tree(self.root_fd, job_id)

    def stdout(self, job_id: str) -> Path:
        return self.outputs / f"{job_id}.stdout"

    def stderr(self, job_id: str) -> Path:
        return self.outputs / f"{job_id}.stderr"

    def tmpdir(self, job_id: str) -> Path:
        """The job's private TMPDIR, outside its working directory, removed after the run."""
        return self.scratch_root / job_id

    def code_file(self, job_id: str, extension: str) -> Path:
        """Where code too long for the command line is written (outside the job's TMPDIR)."""
        return self.scratch_root / f"{job_id}{extension}"
