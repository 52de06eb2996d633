"""The streamable HTTP transport, mounted by the API server: ``Endpoint``.

Stateless (no MCP session to keep: any API replica answers any request), answering in
Server-Sent Events so that progress notifications reach the client while a job runs. The API's
own key check guards the route like every other; each tool call is then a request of the API
app itself, in process (``StreamingASGITransport``), carrying the caller's key and address:
every check of the API (ownership, limits, rate limit) applies unchanged, and another key's job
is a 404 here as there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from interpreter.client import AsyncClient
from interpreter.mcp.asgi import StreamingASGITransport
from interpreter.mcp.tools import build_server

INTERNAL_URL = "http://interpreter.internal"  # requests never leave the process
NOT_READY = "The MCP endpoint is not running: the server is starting or stopping"


class Endpoint:
    """The ``/mcp`` route (``route``) and what must run while it serves (``lifespan``)."""

    def __init__(
        self,
        api: ASGIApp,
        key_of: Callable[[Mapping[str, str]], str | None],
        path: str,
        max_body_bytes: int,
    ) -> None:
        self.api = api
        self.key_of = key_of
        self.max_body_bytes = max_body_bytes
        self.server = build_server(self.connect)
        self.manager: StreamableHTTPSessionManager | None = None
        self.route = Route(path, endpoint=self, include_in_schema=False)

    @contextlib.asynccontextmanager
    async def connect(self, ctx: Context) -> AsyncIterator[AsyncClient]:
        request = ctx.request_context.request
        headers: Mapping[str, str] = request.headers if isinstance(request, Request) else {}
        address = request.client if isinstance(request, Request) else None
        transport = StreamingASGITransport(
            self.api, (address.host, address.port) if address else ("127.0.0.1", 0)
        )
        async with AsyncClient(
            INTERNAL_URL, self.key_of(headers) or "", max_retries=0, transport=transport
        ) as client:
            yield client

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run the MCP session manager (a new one each time the app starts), in a task of its
        own: its task group must end in the task that began it, and an app's lifespan may be
        entered and left in two (as in tests)."""
        self.server.streamable_http_app(
            stateless_http=True,
            max_request_body_size=self.max_body_bytes,
            # The API key guards the route; a Host check would refuse every name but localhost.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        manager = self.server.session_manager
        ready, stop = asyncio.Event(), asyncio.Event()

        async def run() -> None:
            async with manager.run():
                self.manager = manager
                ready.set()
                try:
                    await stop.wait()
                finally:
                    self.manager = None

        task = asyncio.create_task(run(), name="mcp")
        started = asyncio.create_task(ready.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            started.cancel()
            await task  # raises what stopped it
        try:
            yield
        finally:
            stop.set()
            await task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.manager is None:
            response: Any = JSONResponse({"detail": NOT_READY}, status_code=503)
            await response(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)
