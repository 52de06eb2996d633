"""The acceptance tier: ``python -m interpreter.server`` as a real process, driven over HTTP.

``start_server(**env)`` starts a server (see ``server.py``) and waits until it is healthy; every
server a test started, and every process those servers started, is killed at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.acceptance.server import ServerProcess


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(INTERPRETER_MAX_JOBS="1", ...)``: a healthy server; all die at the end."""
    servers: list[ServerProcess] = []

    def start(*, wait: bool = True, **env: str) -> ServerProcess:
        server = ServerProcess(tmp_path / f"server{len(servers)}", env)
        servers.append(server)
        if wait:
            server.start()
        else:
            server.spawn()
        return server

    yield start
    for server in servers:
        server.cleanup()
