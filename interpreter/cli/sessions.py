"""``interpreter session new|run|list|show|interrupt|restart|rm``: sessions, Python kernels on the
server that keep their variables between runs (see docs/cli.md). ``run`` prints the cell's
output as a notebook would (its prints, its displays, its value; PNG images saved with
``--images-dir``) and exits 0 when the cell ran to its end, 1 when it did not; a refusal (an
unknown session, a dead kernel) is a ``ClientError``: one line and exit 2, as for the other
commands."""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from interpreter.cli.output import UsageError, print_json, print_table
from interpreter.client import CellResult, Client, ClientError, JobConflict, Session

__all__ = ["add_session_commands", "session_command"]

EXIT_NOT_COMPLETED = 1  # the cell raised, timed out, was cancelled or its kernel died
EXIT_CANCELLED = 130  # Ctrl-C: the cell was cancelled


def add_session_commands(
    parser: argparse.ArgumentParser, add_globals: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The actions of ``interpreter session`` (``add_globals``: the global options, for each)."""
    actions = parser.add_subparsers(dest="session_command", metavar="ACTION", required=True)
    new = actions.add_parser("new", help="start a session and print its id")
    new.add_argument(
        "--package",
        "-p",
        dest="packages",
        action="append",
        default=[],
        metavar="REQ",
        help="a Python package the session imports (matplotlib, 'pandas>=2'); repeatable",
    )
    new.add_argument(
        "--idle-timeout", type=float, metavar="S", help="end it after S seconds unused"
    )
    new.add_argument("--max-lifetime", type=float, metavar="S", help="end it after S seconds")
    run = actions.add_parser("run", help="run CODE (- for stdin) as a cell of the session")
    run.add_argument("session", metavar="ID")
    run.add_argument("code", metavar="CODE", help="the code, or - to read it from stdin")
    run.add_argument("--timeout", type=float, metavar="S", help="the cell's timeout in seconds")
    run.add_argument("--images-dir", metavar="DIR", help="save the cell's PNG images in DIR")
    listing = actions.add_parser("list", help="this key's sessions")
    show = actions.add_parser("show", help="a session's status")
    interrupt = actions.add_parser("interrupt", help="interrupt the running cell; state kept")
    restart = actions.add_parser("restart", help="a fresh kernel: variables gone, files kept")
    remove = actions.add_parser("rm", help="end a session: its kernel is killed")
    for sub in (show, interrupt, restart, remove):
        sub.add_argument("session", metavar="ID")
    for sub in (new, run, listing, show, interrupt, restart, remove):
        add_globals(sub)


def session_command(client: Client, args: argparse.Namespace) -> int:
    action: Callable[[Client, argparse.Namespace], int] = {
        "new": _new,
        "run": _run,
        "list": _list,
        "show": _show,
        "interrupt": _interrupt,
        "restart": _restart,
        "rm": _remove,
    }[args.session_command]
    return action(client, args)


def _new(client: Client, args: argparse.Namespace) -> int:
    session = client.session(
        packages=args.packages,
        idle_timeout_s=args.idle_timeout,
        max_lifetime_s=args.max_lifetime,
    )
    if args.json:
        print_json(session.info())
    else:
        print(session.id)
    return 0


def _run(client: Client, args: argparse.Namespace) -> int:
    code = sys.stdin.read() if args.code == "-" else args.code
    images_dir = Path(args.images_dir) if args.images_dir is not None else None
    if images_dir is not None:
        try:
            images_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot make {images_dir}: {exc.strerror or exc}") from exc
    job = Session(client, args.session).submit(code, timeout=args.timeout)
    try:
        cell = CellResult.from_dict(job.wait().raw)
    except KeyboardInterrupt:
        try:
            job.cancel()
        except JobConflict:
            pass  # it ended meanwhile
        print(f"interpreter: cancelled cell {job.id}", file=sys.stderr)
        return EXIT_CANCELLED
    saved = _save_images(cell, images_dir) if images_dir is not None else []
    if args.json:
        print_json({**cell.raw, "image_files": [str(path) for path in saved]})
    else:
        _print_cell(cell, saved)
    return 0 if cell.ok else EXIT_NOT_COMPLETED


def _save_images(cell: CellResult, directory: Path) -> list[Path]:
    saved = []
    for number, image in enumerate(cell.images, start=1):
        path = directory / f"{cell.job_id}-{number}.png"
        try:
            path.write_bytes(image)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        saved.append(path)
    return saved


def _print_cell(cell: CellResult, saved: list[Path]) -> None:
    """The cell as a notebook shows it: its prints, then its displays and value in order (an
    image as where it was saved), its exception's traceback on stderr."""
    sys.stdout.write(cell.stdout)
    sys.stdout.flush()
    sys.stderr.write(cell.stderr)
    sys.stderr.flush()
    images = iter(saved)
    for bundle in cell.results:
        data = bundle.get("data")
        if not isinstance(data, dict):
            continue
        if isinstance(data.get("image/png"), str):
            path = next(images, None)
            if path is not None:
                print(f"[image saved to {path}]")
            else:
                size = _decoded_size(data["image/png"])
                print(f"[image/png, {size} bytes: give --images-dir DIR to save it]")
        elif isinstance(data.get("text/plain"), str):
            print(data["text/plain"])
        elif data:
            print(f"[{', '.join(sorted(data))}: see --json]")
        if bundle.get("truncated"):
            print("[this output was cut by the server]")
    if cell.error is not None:
        error = cell.error
        traceback = error.get("traceback") or f"{error.get('name')}: {error.get('value')}"
        print(str(traceback).rstrip("\n"), file=sys.stderr)
    if not cell.ok and cell.error is None:
        detail = cell.error_message or cell.termination_reason or cell.status
        print(f"interpreter: cell {cell.job_id} {cell.status}: {detail}", file=sys.stderr)


def _decoded_size(encoded: str) -> int:
    try:
        return len(base64.b64decode(encoded))
    except (binascii.Error, ValueError):
        return 0


def _list(client: Client, args: argparse.Namespace) -> int:
    sessions = client.sessions()
    if args.json:
        print_json(sessions)
        return 0
    rows = [
        (
            info.get("session_id"),
            info.get("status"),
            info.get("executions"),
            info.get("created_at"),
            info.get("expires_at"),
        )
        for info in sessions
    ]
    print_table(("SESSION", "STATUS", "EXECUTIONS", "CREATED", "EXPIRES"), rows)
    return 0


def _show(client: Client, args: argparse.Namespace) -> int:
    info = Session(client, args.session).info()
    if args.json:
        print_json(info)
    else:
        _print_info(info)
    return 0


def _print_info(info: dict[str, Any]) -> None:
    fields = (
        "session_id",
        "status",
        "error",
        "executions",
        "created_at",
        "last_activity_at",
        "expires_at",
        "idle_timeout_s",
        "max_lifetime_s",
        "working_directory",
    )
    for name in fields:
        if info.get(name) is not None:
            print(f"{name + ':':20}{info[name]}")
    environment = info.get("environment")
    if isinstance(environment, dict):
        installed = " ".join(
            f"{name}=={version}"
            for name, version in sorted((environment.get("packages") or {}).items())
        )
        print(f"{'packages:':20}{installed} (environment {environment.get('id')})")


def _interrupt(client: Client, args: argparse.Namespace) -> int:
    return _action(client, args, "interrupted")


def _restart(client: Client, args: argparse.Namespace) -> int:
    return _action(client, args, "restarted")


def _action(client: Client, args: argparse.Namespace, done: str) -> int:
    session = Session(client, args.session)
    info = session.interrupt() if done == "interrupted" else session.restart()
    if args.json:
        print_json(info)
    else:
        print(f"session {session.id}: {done}")
    return 0


def _remove(client: Client, args: argparse.Namespace) -> int:
    session = Session(client, args.session)
    if not session.close():
        raise ClientError(f"Session not found: {session.id} (it ended already, or is not yours)")
    if args.json:
        print_json({"session_id": session.id, "status": "terminated"})
    else:
        print(f"session {session.id}: terminated")
    return 0
