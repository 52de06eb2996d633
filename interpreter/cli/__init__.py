"""The ``interpreter`` command line: run code on a server (``interpreter run``), look at its jobs
and their files, manage its package environments, and start the server, a worker or the MCP
bridge. Built on ``interpreter.client`` and the standard library: it works with the client-only
install (httpx)."""

from __future__ import annotations

from interpreter.cli.main import main

__all__ = ["main"]
