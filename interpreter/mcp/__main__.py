"""``python -m interpreter.mcp [--server URL] [--api-key KEY]``: the stdio MCP server."""

from __future__ import annotations

import argparse
import sys

from interpreter.mcp.stdio import main


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m interpreter.mcp",
        description="Serve the interpreter's tools (run_code, read_file, list_files, "
        "create_session, close_session) to an MCP client over stdio.",
    )
    parser.add_argument(
        "--server", help="the server's URL (default: $INTERPRETER_URL or http://127.0.0.1:8000)"
    )
    parser.add_argument("--api-key", help="the API key (default: $INTERPRETER_API_KEY)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    sys.exit(main(args.server, args.api_key))
