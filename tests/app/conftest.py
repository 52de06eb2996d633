"""The app tier's API fixture: the real FastAPI app in process, a MemoryStore, real processes.

``api`` is an app with test-friendly settings; ``make_api(**settings)`` builds another one with
other settings (several may run in one test). Every response is checked on the way: none may be
a 500, and no error response may carry a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from interpreter.api.app import create_app
from interpreter.config import Settings
from interpreter.store.memory import MemoryStore
from tests.asgi import serve

FINAL_STATUSES = {"completed", "failed", "timeout", "cancelled"}
POLL_EVERY_S = 0.01

# Fast to start and to stop: short kill grace, short shutdown grace.
TEST_SETTINGS: dict[str, Any] = {
    # The unit tier describes the API with jobs that run as plain processes (some tests read the
    # host pids and paths a job writes); tests/sandbox and tests/security cover the sandbox.
    "sandbox": "none",
    "max_jobs": 4,
    "kill_grace_s": 0.2,
    "shutdown_grace_s": 0.2,
    "default_timeout_s": 10.0,
}


@dataclass
class Api:
    """One running app and a client talking to it, with the helpers every test needs."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    store: MemoryStore

    @property
    def workspace_root(self) -> Path:
        return Path(os.path.realpath(self.settings.workspaces))

    async def submit(self, code: str, language: str = "python", **fields: Any) -> str:
        response = await self.client.post(
            "/execute", json={"code": code, "language": language, **fields}
        )
        assert response.status_code == 200, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    async def status(self, job_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/jobs/{job_id}/status")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait(self, job_id: str, deadline_s: float = 15.0) -> dict[str, Any]:
        """Poll the status every 10 ms until it is final; fail after ``deadline_s``."""
        return await self.wait_for(job_id, FINAL_STATUSES, deadline_s)

    async def wait_for(
        self, job_id: str, statuses: set[str], deadline_s: float = 15.0
    ) -> dict[str, Any]:
        give_up = time.monotonic() + deadline_s
        while True:
            body = await self.status(job_id)
            if body["status"] in statuses:
                return body
            assert time.monotonic() < give_up, f"job {job_id} still {body['status']!r}"
            await asyncio.sleep(POLL_EVERY_S)

    async def results(self, job_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/jobs/{job_id}/results")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def run(self, code: str, language: str = "python", **fields: Any) -> dict[str, Any]:
        """Submit, wait until final, and return the full results."""
        job_id = await self.submit(code, language, **fields)
        await self.wait(job_id)
        return await self.results(job_id)

    @staticmethod
    async def wait_until(predicate: Callable[[], bool], deadline_s: float, what: str) -> None:
        """Poll ``predicate`` every 10 ms; fail after ``deadline_s``."""
        give_up = time.monotonic() + deadline_s
        while not predicate():
            assert time.monotonic() < give_up, f"gave up waiting: {what}"
            await asyncio.sleep(POLL_EVERY_S)

    @staticmethod
    def is_uuid4(value: str) -> bool:
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            return False
        return parsed.version == 4 and str(parsed) == value


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read INTERPRETER_* from the environment: none of the developer's may leak in."""
    for name in list(os.environ):
        if name.startswith("INTERPRETER_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def make_api(tmp_path: Path) -> AsyncIterator[MakeApi]:
    stack = contextlib.AsyncExitStack()
    count = 0

    async def make(store: MemoryStore | None = None, **overrides: Any) -> Api:
        nonlocal count
        count += 1
        settings = Settings(data_dir=tmp_path / f"data{count}", **{**TEST_SETTINGS, **overrides})
        store = store if store is not None else MemoryStore()
        app = create_app(settings, store=store)
        client = await serve(stack, app)
        return Api(app=app, client=client, settings=settings, store=store)

    async with stack:
        yield make


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()
