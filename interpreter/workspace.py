"""Where a job runs: a fresh directory per job, or a caller's directory inside the workspace root."""

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
    if ".." in Path(requested).parts:
        raise InvalidWorkingDirectory(
            f"working_directory {requested!r} must not contain '..' components"
        )
    root_real = Path(os.path.realpath(root))
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
