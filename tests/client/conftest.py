"""The client tier: ``interpreter.client`` (the Python SDK) against a real server process.

``server`` is one server per module (API keys ``k1`` and ``k2``, no rate limit); ``client`` and
``aclient`` are clients of it with the key ``k1``. ``start_server`` (from the acceptance tier)
starts a server of a test's own, e.g. with a tiny rate limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from interpreter.client import AsyncClient, Client
from tests.acceptance.conftest import start_server  # noqa: F401 (a fixture for this tier)
from tests.acceptance.server import ServerProcess, running_server

KEY = "k1"
OTHER_KEY = "k2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("client"),
        INTERPRETER_API_KEYS=f"{KEY},{OTHER_KEY}",
        INTERPRETER_MAX_JOBS="4",
        INTERPRETER_RATE_LIMIT="off",
    ) as server:
        yield server


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, api_key=KEY, transport=httpx.HTTPTransport()) as client:
        yield client


@pytest.fixture
async def aclient(server: ServerProcess) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, api_key=KEY, transport=httpx.AsyncHTTPTransport()) as client:
        yield client
