"""Input files: what a caller sends with a job, checked when it is submitted and written into
the job's working directory before the job starts.

A path is relative to the working directory: no absolute path, no '..', no NUL, no component
longer than a file name may be (255 bytes) and no path longer than a path may be (4095 bytes).
'.' and empty components are dropped ("./data//in.csv" is "data/in.csv"), and two files may not
end up at one path, nor one file at a directory another file needs. Each refusal names the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from interpreter import tree
from interpreter.errors import ExecutionError, InvalidInputFile
from interpreter.job import InputFile

NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4095


@dataclass(frozen=True, slots=True)
class InputLimits:
    """How many input files a job may have, and how large they may be (decoded)."""

    max_files: int
    max_file_bytes: int
    max_total_bytes: int


def shown_path(path: str) -> str:
    """The path as an error names it: quoted, cut to a readable length, never a lone surrogate."""
    text = path if len(path) <= 200 else path[:200] + "..."
    return repr(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def normalize_path(path: str) -> str:
    """The canonical form of an input file's path; ``InvalidInputFile`` naming it if refused."""
    shown = shown_path(path)
    if not path:
        raise InvalidInputFile("input file path is empty")
    if "\x00" in path:
        raise InvalidInputFile(f"input file {shown}: the path holds a NUL byte")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputFile(
            f"input file {shown}: the path is not valid Unicode (a lone surrogate)"
        ) from None
    if path.startswith("/"):
        raise InvalidInputFile(
            f"input file {shown}: the path is absolute; it must be relative to the working "
            "directory"
        )
    if path.endswith("/"):
        raise InvalidInputFile(f"input file {shown}: the path names a directory, not a file")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidInputFile(f"input file {shown}: the path holds '..'")
    if not parts:
        raise InvalidInputFile(f"input file {shown}: the path names no file")
    if size > PATH_MAX_BYTES:
        raise InvalidInputFile(
            f"input file {shown}: the path is {size} bytes; the maximum is {PATH_MAX_BYTES}"
        )
    if any(len(part.encode("utf-8")) > NAME_MAX_BYTES for part in parts):
        raise InvalidInputFile(
            f"input file {shown}: a name in the path is longer than {NAME_MAX_BYTES} bytes"
        )
    return "/".join(parts)


def check_input_files(files: Iterable[InputFile], limits: InputLimits) -> tuple[InputFile, ...]:
    """The files with their paths made canonical, once every rule holds (``InvalidInputFile``,
    naming the file, for the first that does not)."""
    checked: list[InputFile] = []
    seen: dict[str, str] = {}  # canonical path -> as given
    total = 0
    for file in files:
        if len(checked) >= limits.max_files:
            raise InvalidInputFile(
                f"too many input files; the maximum is {limits.max_files} per job"
            )
        path = normalize_path(file.path)
        if path in seen:
            raise InvalidInputFile(
                f"input file {shown_path(file.path)}: the same path as {shown_path(seen[path])}"
            )
        size = len(file.content)
        if size > limits.max_file_bytes:
            raise InvalidInputFile(
                f"input file {shown_path(file.path)} is {size} bytes; the maximum is "
                f"{limits.max_file_bytes} bytes per file"
            )
        total += size
        if total > limits.max_total_bytes:
            raise InvalidInputFile(
                f"input files total more than {limits.max_total_bytes} bytes (the maximum), "
                f"reached at {shown_path(file.path)}"
            )
        seen[path] = file.path
        checked.append(InputFile(path, file.content))
    for path, given in seen.items():  # a file where another needs a directory
        parent = path
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            if parent in seen:
                raise InvalidInputFile(
                    f"input file {shown_path(seen[parent])}: a file where input file "
                    f"{shown_path(given)} needs a directory"
                )
    return tuple(checked)


def write_input_files(cwd_fd: int, files: Sequence[InputFile]) -> None:
    """Write the job's input files beneath its working directory (open as ``cwd_fd``), never
    through a symlink (``tree.write_file_beneath``); ``ExecutionError`` naming the file that
    could not be written (the files before it stay written)."""
    for file in files:
        try:
            tree.write_file_beneath(cwd_fd, file.path, file.content)
        except tree.UnsafePath as exc:
            raise ExecutionError(
                f"input file {shown_path(file.path)} not written: {exc.strerror} (in the working "
                "directory); nothing was written through it"
            ) from exc
        except OSError as exc:
            reason = exc.strerror or os.strerror(exc.errno or 0) or type(exc).__name__
            raise ExecutionError(
                f"input file {shown_path(file.path)} not written: {reason}"
            ) from exc
