"""The app in process, as the app and unit tiers reach it: its lifespan entered, an httpx client
over ASGI, and every answer checked on the way (never a 500, never a stack trace)."""

from __future__ import annotations

import contextlib

import httpx
from fastapi import FastAPI


async def no_server_error(response: httpx.Response) -> None:
    await response.aread()
    assert response.status_code != 500, f"{response.request.url}: 500 {response.text[:500]}"
    if response.is_error:  # a job's own stderr may hold a traceback; our errors never do
        assert "Traceback" not in response.text, f"{response.request.url}: {response.text[:500]}"


async def serve(stack: contextlib.AsyncExitStack, app: FastAPI) -> httpx.AsyncClient:
    """Start ``app`` (its lifespan) and a checked client to it, both closed with ``stack``."""
    await stack.enter_async_context(app.router.lifespan_context(app))
    return await stack.enter_async_context(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test",
            event_hooks={"response": [no_server_error]},
        )
    )
