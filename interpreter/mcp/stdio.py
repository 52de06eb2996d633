"""The stdio transport: an MCP server on stdin/stdout, a client of an interpreter server.

``main`` is what ``interpreter mcp --server URL --api-key KEY`` and ``python -m
interpreter.mcp`` call. Every tool call goes to that server through one ``AsyncClient``; the
key defaults to ``$INTERPRETER_API_KEY`` and the URL to ``$INTERPRETER_URL``, as the SDK's.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from interpreter.client import AsyncClient


def main(base_url: str | None, api_key: str | None) -> int:
    """Serve the tools over stdio until the client closes stdin; the exit code."""
    try:
        import anyio

        from interpreter.mcp.tools import build_server
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in ("mcp", "anyio"):
            raise
        print(
            "the MCP server needs the mcp package: pip install 'interpreter-server[mcp]'",
            file=sys.stderr,
        )
        return 1

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)  # stdout carries MCP

    async def serve() -> None:
        async with AsyncClient(base_url, api_key) as client:

            @contextlib.asynccontextmanager
            async def connect(_: object) -> AsyncIterator[AsyncClient]:
                yield client

            await build_server(connect).run_stdio_async()

    try:
        anyio.run(serve)
    except KeyboardInterrupt:
        return 130
    return 0
