"""The MCP endpoint the API server mounts at ``/mcp``, or None when ``mcp`` is not installed.

Kept free of the ``mcp`` package so that the server starts without it (one warning line)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from starlette.types import ASGIApp

if TYPE_CHECKING:
    from interpreter.mcp.http import Endpoint

logger = logging.getLogger(__name__)

PATH = "/mcp"


def endpoint(
    api: ASGIApp, key_of: Callable[[Mapping[str, str]], str | None], max_body_bytes: int
) -> Endpoint | None:
    """The endpoint serving the tools over streamable HTTP, each call a request of ``api`` with
    the caller's key (``key_of`` the request's headers); None, said once, without ``mcp``."""
    try:
        from interpreter.mcp.http import Endpoint
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "mcp":
            raise
        logger.warning(
            "MCP endpoint %s disabled: the mcp package is not installed "
            "(pip install 'interpreter-server[server]')",
            PATH,
        )
        return None
    return Endpoint(api, key_of, PATH, max_body_bytes)
