"""The ``interpreter`` console script: its arguments and the dispatch to each command. A
``ClientError`` is one line on stderr (``interpreter: <detail>``) and exit 2, never a
traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from interpreter.cli.entrypoints import mcp_command, serve_command, worker_command
from interpreter.cli.environments import environments_command
from interpreter.cli.jobs import files_command, jobs_command
from interpreter.cli.output import UsageError
from interpreter.cli.run import run_command
from interpreter.cli.sessions import add_session_commands, session_command
from interpreter.client import Client, ClientError

__all__ = ["EXIT_ERROR", "build_parser", "main"]

EXIT_ERROR = 2  # a refusal (ClientError), a bad command line, a missing extra
STATUSES = ("pending", "running", "completed", "failed", "timeout", "cancelled")


def _version() -> str:
    try:
        return metadata.version("interpreter-server")
    except metadata.PackageNotFoundError:
        return "unknown"


def _add_globals(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The global options, accepted before the command and after it alike."""
    default = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--server", metavar="URL", default=default, help="the server (else $INTERPRETER_URL)"
    )
    group.add_argument(
        "--api-key", metavar="KEY", default=default, help="the API key (else $INTERPRETER_API_KEY)"
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="machine-readable output: one JSON document",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interpreter", description="Run code on an interpreter server and manage its jobs."
    )
    parser.add_argument("--version", action="version", version=f"interpreter {_version()}")
    _add_globals(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, *, client: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        if client:  # the commands that call a server take the global options after them too
            _add_globals(sub, top=False)
        return sub

    run = command("run", "run FILE or -c CODE as a job, its output live, its exit code ours")
    run.add_argument("file", nargs="?", metavar="FILE", help="the code to run")
    run.add_argument("-c", dest="code", metavar="CODE", help="the code to run, inline")
    run.add_argument(
        "--language", "-l", help="python, shell or javascript (else from FILE's extension)"
    )
    run.add_argument("--timeout", type=float, metavar="S", help="the job's timeout in seconds")
    run.add_argument(
        "--file",
        dest="files",
        action="append",
        default=[],
        metavar="LOCAL[:REMOTE]",
        help="a local file for the job's directory (REMOTE: its path there); repeatable",
    )
    run.add_argument(
        "--stdin-file", metavar="F", help="the job's stdin (else what is piped in, if any)"
    )
    run.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="repeatable")
    run.add_argument("--workdir", metavar="NAME", help="a named working directory, kept")
    run.add_argument(
        "--package",
        "-p",
        dest="packages",
        action="append",
        default=[],
        metavar="REQ",
        help="a Python package the job imports (numpy, 'pandas>=2'), installed from the "
        "server's package registry; repeatable",
    )

    jobs = command("jobs", "list, show, cancel jobs and read their output")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    listing = jobs_commands.add_parser("list", help="jobs, newest first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (20)")
    show = jobs_commands.add_parser("show", help="the job's full result")
    cancel = jobs_commands.add_parser("cancel", help="cancel a pending or running job")
    logs = jobs_commands.add_parser("logs", help="the job's stdout and stderr")
    logs.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    for sub in (listing, show, cancel, logs):
        _add_globals(sub, top=False)
    for sub in (show, cancel, logs):
        sub.add_argument("job", metavar="JOB")

    files = command("files", "list a finished job's files, download one or all")
    files.add_argument("job", metavar="JOB")
    files.add_argument("path", nargs="?", metavar="PATH", help="the file to download")
    files.add_argument("--archive", action="store_true", help="the whole directory, .tar.gz")
    files.add_argument("-o", "--output", metavar="OUT", help="write to OUT (else stdout)")

    environments = command(
        "environments", "list, build and delete the server's Python package environments"
    )
    env_commands = environments.add_subparsers(
        dest="environments_command", metavar="ACTION", required=True
    )
    env_list = env_commands.add_parser(
        "list", help="the environments on the server, most recently used first"
    )
    env_build = env_commands.add_parser(
        "build", help="resolve and install packages now, so that the first job starts at once"
    )
    env_build.add_argument(
        "packages", nargs="+", metavar="PKG", help="a requirement (six, 'pandas>=2')"
    )
    env_delete = env_commands.add_parser("delete", help="remove an environment no job uses")
    env_delete.add_argument("environment", metavar="ID")
    for sub in (env_list, env_build, env_delete):
        _add_globals(sub, top=False)

    session = command("session", "start Python sessions that keep their state, run code in them")
    add_session_commands(session, lambda sub: _add_globals(sub, top=False))

    command("serve", "run the server (settings from INTERPRETER_* variables)", client=False)
    worker = command("worker", "run a worker of the PostgreSQL queue", client=False)
    worker.add_argument("--concurrency", type=int, help="jobs run at once")
    worker.add_argument("--apply-schema", action="store_true", help="set the schema up and exit")
    worker.add_argument("--check", action="store_true", help="exit 0 when the database is ready")
    command("mcp", "serve the job tools over MCP on stdio, for an agent")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return serve_command(args)
        if args.command == "worker":
            return worker_command(args)
        if args.command == "mcp":
            return mcp_command(args)
        with Client(args.server, args.api_key) as client:
            if args.command == "run":
                return run_command(client, args)
            if args.command == "jobs":
                return jobs_command(client, args)
            if args.command == "environments":
                return environments_command(client, args)
            if args.command == "session":
                return session_command(client, args)
            return files_command(client, args)
    except (ClientError, UsageError) as exc:
        detail = exc.detail if isinstance(exc, ClientError) else str(exc)
        print(f"interpreter: {detail}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `| head` stopped reading: no complaint when stdout is flushed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
