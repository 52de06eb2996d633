"""``interpreter serve``, ``interpreter worker`` and ``interpreter mcp``: the server's entry
points (they need the ``server`` extra) and the MCP bridge (the ``mcp`` extra), imported only
when asked for so that the client-only install runs every other command."""

from __future__ import annotations

import argparse
import sys

from interpreter.extras import missing_server_extra

__all__ = ["mcp_command", "serve_command", "worker_command"]


def serve_command(args: argparse.Namespace) -> int:
    try:
        from interpreter.server import main
    except ModuleNotFoundError as exc:
        return _missing_server_extra(exc, "interpreter serve")
    return main([])


def worker_command(args: argparse.Namespace) -> int:
    try:
        from interpreter.worker import main
    except ModuleNotFoundError as exc:
        return _missing_server_extra(exc, "interpreter worker")
    argv: list[str] = []
    if args.concurrency is not None:
        argv += ["--concurrency", str(args.concurrency)]
    if args.apply_schema:
        argv.append("--apply-schema")
    if args.check:
        argv.append("--check")
    return main(argv)


def mcp_command(args: argparse.Namespace) -> int:
    try:
        from interpreter.mcp.stdio import main  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "interpreter.mcp"
        print(
            f"interpreter mcp needs the MCP extra (no module {missing!r}): install "
            "interpreter-server[mcp] (pip install 'interpreter-server[mcp]', or '.[mcp]' in a "
            "checkout)",
            file=sys.stderr,
        )
        return 2
    code: int = main(args.server, args.api_key)
    return code


def _missing_server_extra(exc: ModuleNotFoundError, command: str) -> int:
    message = missing_server_extra(exc, command)
    if message is None:
        raise exc
    print(message, file=sys.stderr)
    return 2
