"""httpx transports that lose connections on purpose, as a network would: after the server
received a request (its answer never arrives), or in the middle of an event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx


class DropFirstAnswer(httpx.BaseTransport):
    """Sends every request; the answer to the first ``POST /execute`` is read, then lost
    (``httpx.ReadError``): the server made the job, the client never heard of it."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.execute_keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/execute":
            self.execute_keys.append(request.headers.get("idempotency-key"))
            if len(self.execute_keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection lost by the test", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncDropFirstAnswer(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.execute_keys: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/execute":
            self.execute_keys.append(request.headers.get("idempotency-key"))
            if len(self.execute_keys) == 1:
                await response.aread()
                await response.aclose()
                raise httpx.ReadError("connection lost by the test", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class _CutStream(httpx.SyncByteStream):
    """The bytes of a stream up to the first chunk holding an output event, then a ReadError."""

    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[bytes]:
        seen = b""
        for chunk in self.inner:
            seen += chunk
            yield chunk
            if b"event: stdout" in seen:
                raise httpx.ReadError("connection lost by the test")

    def close(self) -> None:
        self.inner.close()


class _AsyncCutStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = b""
        async for chunk in self.inner:
            seen += chunk
            yield chunk
            if b"event: stdout" in seen:
                raise httpx.ReadError("connection lost by the test")

    async def aclose(self) -> None:
        await self.inner.aclose()


class DropFirstStream(httpx.BaseTransport):
    """Cuts the first ``GET /jobs/{id}/stream`` after its first output event; records the
    ``Last-Event-ID`` of every stream request."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.last_event_ids: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/stream"):
            return response
        self.last_event_ids.append(request.headers.get("last-event-id"))
        if len(self.last_event_ids) > 1:
            return response
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CutStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


class AsyncDropFirstStream(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.last_event_ids: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/stream"):
            return response
        self.last_event_ids.append(request.headers.get("last-event-id"))
        if len(self.last_event_ids) > 1:
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_AsyncCutStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()
