"""Where a job runs: a fresh directory per job, or one inside the workspace root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from interpreter.errors import InvalidWorkingDirectory


def resolve_working_directory(root: Path, requested: str) -> Path:
    """``requested`` resolved (relative paths against ``root``); it must stay inside ``root``.

    Symlinks are resolved first, so a link that points out of the root is refused too.
    """
    if "\x00" in requested:
        raise InvalidWorkingDirectory("working_directory must not contain NUL bytes")
    root_real = Path(os.path.realpath(root))
    if ".." in Path(requested).parts:
        raise InvalidWorkingDirectory(
            f"working_directory {requested!r} must not contain '..' components; use a path "
            f"inside the workspace root {str(root_real)!r}"
        )
    candidate = Path(requested)
    if not candidate.is_absolute():
        candidate = root_real / candidate
    resolved = Path(os.path.realpath(candidate))
    if root_real not in resolved.parents:
        raise InvalidWorkingDirectory(
            f"working_directory {requested!r} resolves to {str(resolved)!r}, which is outside "
            f"the workspace root {str(root_real)!r}; use a path inside it (relative paths are "
            "taken from the root)"
        )
    if resolved.exists() and not resolved.is_dir():
        raise InvalidWorkingDirectory(f"working_directory {requested!r} is not a directory")
    return resolved


def remove_tree(path: Path) -> None:
    """Delete a job's directory without following any symlink planted in it."""
    try:
        if path.is_symlink() or not path.exists():
            path.unlink(missing_ok=True)
            return
        shutil.rmtree(path)  # rmtree never follows symlinks inside the tree
    except OSError:
        pass


class JobPaths:
    """Where each of a job's files lives under the data directory."""

    def __init__(self, data_dir: Path, workspace_root: Path) -> None:
        self.data_dir = data_dir
        self.workspace_root = workspace_root
        self.outputs = data_dir / "outputs"
        self.scratch_root = data_dir / "scratch"

    def ensure(self) -> None:
        for path in (self.data_dir, self.workspace_root, self.outputs, self.scratch_root):
            path.mkdir(parents=True, exist_ok=True)

    def remove_transient(self) -> None:
        """Empty the output and scratch directories (scale-out: outputs live in the store, so
        what a previous process left here is a dead job's; the data-dir lock says none runs)."""
        for directory in (self.outputs, self.scratch_root):
            for entry in list(directory.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    remove_tree(entry)
                else:
                    entry.unlink(missing_ok=True)

    def workspace(self, job_id: str) -> Path:
        """The fresh directory of a job that named no working_directory."""
        return self.workspace_root / job_id

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
