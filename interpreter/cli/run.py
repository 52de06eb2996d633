"""``interpreter run``: submit code as a job, stream its output live and exit with its code."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

from interpreter.cli.output import UsageError, print_json
from interpreter.cli.progress import Progress
from interpreter.client import Client, ClientError, Job, JobConflict

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_CANCELLED",
    "EXIT_SANDBOX_ERROR",
    "EXIT_TIMEOUT",
    "exit_code_of",
    "guess_language",
    "run_command",
]

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_SANDBOX_ERROR = 125  # the job failed for a reason not its own (sandbox, packages)
EXIT_CANCELLED = 130  # as a shell after Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: as a program whose reader went away (`| head -1`)
EXIT_FAILED = 1  # failed with neither an exit code nor a signal

EXTENSIONS = {".py": "python", ".sh": "shell", ".bash": "shell", ".js": "javascript"}


def guess_language(path: str) -> str:
    language = EXTENSIONS.get(Path(path).suffix.lower())
    if language is None:
        known = ", ".join(sorted(EXTENSIONS))
        raise UsageError(f"cannot guess the language of {path} ({known}): give --language")
    return language


def exit_code_of(status: str, exit_code: int | None, reason: str | None, signal: int | None) -> int:
    """The command's exit code for a final job: its own exit code; 128 + N when killed by signal
    N; 124 timed out; 125 a sandbox error or packages that could not be installed (not the
    code's doing); 130 cancelled."""
    if status == "timeout" or reason == "timeout":
        return EXIT_TIMEOUT
    if status == "cancelled" or reason == "cancelled":
        return EXIT_CANCELLED
    if reason in ("sandbox_error", "packages_error"):
        return EXIT_SANDBOX_ERROR
    if exit_code is not None:
        return exit_code if 0 <= exit_code <= 255 else EXIT_FAILED
    if signal is not None:
        return 128 + signal
    return 0 if status == "completed" else EXIT_FAILED


# -- the request -----------------------------------------------------------------------------------


def _code(args: argparse.Namespace) -> tuple[str, str]:
    """The code to run and its language."""
    if args.code is not None:
        if args.file is not None:
            raise UsageError("give FILE or -c CODE, not both")
        return args.code, args.language or "python"
    if args.file is None:
        raise UsageError("give FILE or -c CODE")
    try:
        code = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {_reason(exc)}") from exc
    return code, args.language or guess_language(args.file)


def _files(specs: list[str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for spec in specs:
        local, sep, remote = spec.partition(":")
        path = Path(local)
        if not local:
            raise UsageError(f"--file {spec}: expected LOCAL:REMOTE")
        if not path.is_file():
            raise UsageError(f"--file {spec}: no file {local}")
        files[remote if sep and remote else path.name] = path
    return files


def _environment(specs: list[str]) -> dict[str, str]:
    environment: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise UsageError(f"--env {spec}: expected NAME=VALUE")
        environment[name] = value
    return environment


def _stdin(args: argparse.Namespace) -> str | None:
    """--stdin-file, else what is piped in when stdin is not a terminal, else nothing."""
    try:
        if args.stdin_file is not None:
            data = Path(args.stdin_file).read_bytes()
        elif sys.stdin is not None and not sys.stdin.isatty():
            data = sys.stdin.buffer.read()
        else:
            return None
    except OSError as exc:
        raise UsageError(f"cannot read stdin: {_reason(exc)}") from exc
    try:
        return data.decode("utf-8") if data else None
    except UnicodeDecodeError as exc:
        raise UsageError("stdin is not UTF-8 text") from exc


def _reason(exc: Exception) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)


# -- the command -----------------------------------------------------------------------------------


def run_command(client: Client, args: argparse.Namespace) -> int:
    code, language = _code(args)
    job = client.submit(
        code,
        language=language,
        timeout=args.timeout,
        files=_files(args.files) or None,
        stdin=_stdin(args),
        environment=_environment(args.env) or None,
        working_directory=args.workdir,
        packages=args.packages or None,
    )
    try:
        if args.json:
            result = job.wait()
            print_json(result.raw)
            return exit_code_of(
                result.status, result.exit_code, result.termination_reason, result.signal
            )
        return _follow(job, progress=_is_terminal(sys.stderr))
    except KeyboardInterrupt:
        _cancel(job)
        return EXIT_CANCELLED
    except BrokenPipeError:
        return _reader_gone(job)


def _follow(job: Job, *, progress: bool) -> int:
    """Stream the job's output to ours until it ends; its exit code."""
    end: dict[str, Any] = {}
    stdout: BinaryIO = sys.stdout.buffer
    stderr: BinaryIO = sys.stderr.buffer
    with Progress(job.id, stdout, stderr, enabled=progress) as shown:
        for event in job.stream():
            if event.event in ("stdout", "stderr"):
                shown.write(event.event, event.bytes)
            elif event.event == "status":
                shown.set_status(str(event.data.get("status")))
            elif event.event == "end":
                end = event.data
    status = str(end.get("status"))
    reason = end.get("termination_reason")
    exit_code = end.get("exit_code")
    signal = None
    if exit_code is None and status == "failed":
        signal = job.full_result().get("signal")  # the end event does not carry it
    if reason not in (None, "exit"):
        detail = end.get("error_message") or reason
        print(f"interpreter: job {job.id} {status}: {detail}", file=sys.stderr)
    return exit_code_of(status, exit_code, reason, signal)


def _cancel(job: Job) -> None:
    """Ctrl-C: cancel the job (a second Ctrl-C gives up waiting for the answer)."""
    with contextlib.suppress(KeyboardInterrupt):
        try:
            job.cancel()
        except JobConflict:
            pass  # it ended meanwhile
        except ClientError as exc:
            print(f"interpreter: could not cancel job {job.id}: {exc.detail}", file=sys.stderr)
            return
        print(f"interpreter: cancelled job {job.id}", file=sys.stderr)


def _reader_gone(job: Job) -> int:
    """Our stdout or stderr is a pipe nobody reads any more (``| head -1``): cancel the job,
    quietly, and exit as a program killed by SIGPIPE would."""
    # Python flushes both at exit: on devnull, no "Exception ignored ... BrokenPipeError"
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)
    with contextlib.suppress(ClientError, KeyboardInterrupt):
        job.cancel()  # JobConflict (409) when it ended meanwhile: nothing to do
    return EXIT_BROKEN_PIPE


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
