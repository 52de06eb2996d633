"""The asynchronous client: ``AsyncClient`` and ``AsyncJob`` over ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from interpreter.client import _core as core
from interpreter.client._errors import ClientError, InvalidRequest, WaitTimeout
from interpreter.client._models import (
    FINAL_STATUSES,
    CellResult,
    EnvironmentInfo,
    FileInfo,
    OutputEvent,
    Result,
)

__all__ = ["AsyncClient", "AsyncJob", "AsyncSession"]


class AsyncClient:
    """``Client`` over ``httpx.AsyncClient``: the same arguments and methods, as coroutines
    (``stream`` an async iterator); ``async with`` closes it."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = core.base_url(base_url)
        self.timeout = timeout
        self.max_retries = max_retries
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=core.default_headers(core.api_key(api_key)),
            timeout=timeout,
            transport=transport,
        )

    # -- plumbing --------------------------------------------------------------------------------
    async def _send(self, call: core.Call) -> httpx.Response:
        """Send ``call``, retrying as the policy says; a 2xx answer, else a typed error."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, **call.kwargs(self.timeout)
                )
            except httpx.TransportError as exc:
                if attempt >= self.max_retries or not core.retryable_exception(
                    exc, call.retry_reads
                ):
                    raise core.unreachable(self.base_url, exc) from exc
                attempt += 1
                await asyncio.sleep(core.backoff_s(attempt))
                continue
            if response.is_success:
                return response
            error = core.error_for(response.status_code, response.headers, response.content)
            if attempt >= self.max_retries or not core.retryable_status(response.status_code):
                raise error
            attempt += 1
            await asyncio.sleep(core.retry_delay_s(error, attempt))

    async def _json(self, call: core.Call) -> Any:
        response = await self._send(call)
        return core.json_body(response.content, response.status_code)

    # -- jobs ------------------------------------------------------------------------------------
    async def run(
        self,
        code: str,
        *,
        language: str = "python",
        timeout: float | None = None,
        files: core.Files | None = None,
        stdin: str | None = None,
        environment: Mapping[str, str] | None = None,
        working_directory: str | None = None,
        limits: Mapping[str, float] | None = None,
        metadata: Mapping[str, Any] | None = None,
        packages: Sequence[str] | None = None,
    ) -> Result:
        """Run ``code`` and answer its result once final: one round trip when the job ends
        within the server's wait, else long polls until it does. ``packages``: Python
        requirements (``["numpy>=2", "pandas"]``) installed for the job from the server's
        package registry (``InvalidRequest`` with ``kind`` when they cannot be had)."""
        body = core.execute_body(
            code,
            language=language,
            timeout=timeout,
            stdin=stdin,
            environment=environment,
            working_directory=working_directory,
            limits=limits,
            metadata=metadata,
            packages=packages,
        )
        call = core.execute_call(
            body,
            files,
            wait_s=core.execute_wait_s(timeout),
            idempotency_key=core.new_idempotency_key(),
        )
        answer = await self._json(call)
        if core.is_execute_answer_final(answer) and answer.get("status") in FINAL_STATUSES:
            return Result.from_dict(answer)
        return await self.job(str(answer["job_id"])).wait()

    async def submit(
        self,
        code: str,
        *,
        language: str = "python",
        timeout: float | None = None,
        files: core.Files | None = None,
        stdin: str | None = None,
        environment: Mapping[str, str] | None = None,
        working_directory: str | None = None,
        limits: Mapping[str, float] | None = None,
        metadata: Mapping[str, Any] | None = None,
        packages: Sequence[str] | None = None,
    ) -> AsyncJob:
        """Submit ``code`` and answer at once with a handle on the job."""
        body = core.execute_body(
            code,
            language=language,
            timeout=timeout,
            stdin=stdin,
            environment=environment,
            working_directory=working_directory,
            limits=limits,
            metadata=metadata,
            packages=packages,
        )
        call = core.execute_call(
            body, files, wait_s=0.0, idempotency_key=core.new_idempotency_key()
        )
        answer = await self._json(call)
        return self.job(str(answer["job_id"]))

    def job(self, job_id: str) -> AsyncJob:
        """A handle on an existing job (sends no request)."""
        return AsyncJob(self, job_id)

    async def jobs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """One page of ``GET /jobs``, newest first."""
        answer = await self._json(core.get("/jobs", status=status, limit=limit))
        return list(answer["jobs"])

    # -- sessions --------------------------------------------------------------------------------
    def session(
        self,
        packages: Sequence[str] = (),
        limits: Mapping[str, float] | None = None,
        idle_timeout_s: float | None = None,
        max_lifetime_s: float | None = None,
        environment_variables: Mapping[str, str] | None = None,
        language: str = "python",
    ) -> AsyncSession:
        """``Client.session`` for ``async with client.session(...) as session`` (deleted on
        exit) or ``session = await client.session(...)``: either starts it on the server."""
        body = core.session_body(
            language=language,
            packages=packages,
            limits=limits,
            idle_timeout_s=idle_timeout_s,
            max_lifetime_s=max_lifetime_s,
            environment_variables=environment_variables,
        )
        return AsyncSession(self, request=body)

    async def sessions(self) -> list[dict[str, Any]]:
        """This key's sessions (each the body of ``GET /sessions/{id}``)."""
        answer = await self._json(core.get("/sessions"))
        return list(answer["sessions"])

    # -- package environments --------------------------------------------------------------------
    async def environments(self) -> list[EnvironmentInfo]:
        """The package environments on the server's disk, the most recently used first."""
        answer = await self._json(core.get("/environments"))
        return [EnvironmentInfo.from_dict(entry) for entry in answer]

    async def build_environment(self, packages: Sequence[str]) -> EnvironmentInfo:
        """Resolve and install ``packages`` now, so that the first job asking for them starts
        at once (``cached``: it existed already). Shared by every key of the server."""
        answer = await self._json(core.build_environment_call(packages))
        return EnvironmentInfo.from_dict(answer)

    async def delete_environment(self, environment_id: str) -> None:
        """Remove an environment no job uses: ``JobNotFound`` when there is none by that id,
        ``JobConflict`` while a running job uses it."""
        await self._send(core.delete_environment_call(environment_id))

    async def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self._json(core.get("/health"))
        return answer

    # -- lifecycle -------------------------------------------------------------------------------
    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AsyncJob:
    """A handle on one job of an ``AsyncClient`` (every method is a coroutine)."""

    def __init__(self, client: AsyncClient, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def status(self) -> str:
        answer = await self.client._json(core.get(core.job_path(self.id, "status")))
        return str(answer["status"])

    async def full_result(self) -> dict[str, Any]:
        """The raw ``GET /jobs/{id}/results`` body, final or not."""
        answer: dict[str, Any] = await self.client._json(core.results_call(self.id, 0.0))
        return answer

    async def wait(self, timeout: float | None = None) -> Result:
        """Long poll until the job is final and answer its result; ``WaitTimeout`` past
        ``timeout`` seconds (None: no bound)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = core.MAX_WAIT_S if deadline is None else deadline - time.monotonic()
            answer = await self.client._json(core.results_call(self.id, left))
            if answer.get("status") in FINAL_STATUSES:
                return Result.from_dict(answer)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"job {self.id} is still {answer.get('status')} after {timeout} s"
                )

    async def result(self) -> Result:
        return await self.wait()

    async def cancel(self) -> dict[str, Any]:
        """Cancel the job: the server's answer (``JobConflict`` once it is final)."""
        answer: dict[str, Any] = await self.client._json(core.cancel_call(self.id))
        return answer

    async def files(self) -> list[FileInfo]:
        answer = await self.client._json(core.get(core.job_path(self.id, "files")))
        return [FileInfo.from_dict(entry) for entry in answer["files"]]

    async def download(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """One file of the finished job's directory (``path`` relative to it); with
        ``max_bytes``, only its first ``max_bytes`` bytes (one ranged request)."""
        if max_bytes is not None:
            return (await self.download_head(path, max_bytes))[0]
        return (await self.client._send(core.download_call(self.id, path, None))).content

    async def download_head(self, path: str, max_bytes: int) -> tuple[bytes, int]:
        """The first ``max_bytes`` bytes of a file of the job's directory and the file's size
        in bytes, from one ranged request (an empty file: ``(b"", 0)``)."""
        try:
            response = await self.client._send(core.download_call(self.id, path, max_bytes))
        except InvalidRequest as exc:
            if exc.status_code == 416:  # bytes=0-... of an empty file
                return b"", 0
            raise
        return core.file_head(response.content, response.headers, max_bytes)

    async def archive(self) -> bytes:
        """The finished job's directory as a ``.tar.gz``."""
        return (await self.client._send(core.get(core.job_path(self.id, "archive")))).content

    async def stream(self) -> AsyncIterator[OutputEvent]:
        """The job's events as they come, until ``end``. A dropped connection is resumed from
        the last event's id: no output is lost or repeated."""
        state = core.StreamState()
        attempt = 0
        http = self.client._http
        while not state.done:
            try:
                async with http.stream(
                    "GET",
                    core.job_path(self.id, "stream"),
                    headers=core.stream_headers(state.last_id),
                    timeout=core.stream_timeout(self.client.timeout),
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        error = core.error_for(
                            response.status_code, response.headers, response.content
                        )
                        if attempt >= self.client.max_retries or not core.retryable_status(
                            response.status_code
                        ):
                            raise error
                        attempt += 1
                        await asyncio.sleep(core.retry_delay_s(error, attempt))
                        state.reconnect()
                        continue
                    parser = core.EventParser()
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        attempt = 0
                        if state.accept(event):
                            yield event
                        if state.done:
                            return
            except httpx.TransportError as exc:
                if attempt >= self.client.max_retries:
                    raise core.unreachable(self.client.base_url, exc) from exc
                attempt += 1
                await asyncio.sleep(core.backoff_s(attempt))
            else:  # the stream ended before `end`
                if attempt >= self.client.max_retries:
                    raise core.ended_early(self.id)
                attempt += 1
            state.reconnect()  # resume after the last event received


class AsyncSession:
    """``Session`` of an ``AsyncClient`` (every method a coroutine). ``AsyncClient.session``
    answers one still to start: ``await`` it or enter it (``async with``, which deletes it on
    exit). ``AsyncSession(client, id)`` is a handle on an existing one."""

    def __init__(
        self,
        client: AsyncClient,
        session_id: str | None = None,
        *,
        request: dict[str, Any] | None = None,
    ) -> None:
        if (session_id is None) == (request is None):
            raise TypeError("give a session_id or a request, one of them")
        self.client = client
        self._id = session_id
        self._request = request
        self.closed = False

    def __repr__(self) -> str:
        return f"AsyncSession({self._id!r})"

    @property
    def id(self) -> str:
        if self._id is None:
            raise ClientError(
                "the session is not started: await client.session(...) or use async with"
            )
        return self._id

    async def start(self) -> AsyncSession:
        """Start the session on the server (``POST /sessions``), unless it is started."""
        if self._id is None:
            assert self._request is not None
            answer = await self.client._json(core.create_session_call(self._request))
            self._id = str(answer["session_id"])
        return self

    def __await__(self) -> Generator[Any, None, AsyncSession]:
        return self.start().__await__()

    async def info(self) -> dict[str, Any]:
        """The session's status (``GET /sessions/{id}``)."""
        answer: dict[str, Any] = await self.client._json(core.get(core.session_path(self.id)))
        return answer

    async def run(self, code: str, timeout: float | None = None) -> CellResult:
        """Run ``code`` as a cell of the session's kernel; its result once final."""
        call = core.session_execute_call(self.id, code, timeout, core.execute_wait_s(timeout))
        answer = await self.client._json(call)
        if core.is_execute_answer_final(answer) and answer.get("status") in FINAL_STATUSES:
            return CellResult.from_dict(answer)
        result = await self.client.job(str(answer["job_id"])).wait()
        return CellResult.from_dict(result.raw)

    async def submit(self, code: str, timeout: float | None = None) -> AsyncJob:
        """Queue ``code`` as a cell and answer at once with its job."""
        call = core.session_execute_call(self.id, code, timeout, 0.0)
        answer = await self.client._json(call)
        return self.client.job(str(answer["job_id"]))

    async def interrupt(self) -> dict[str, Any]:
        """Interrupt the running cell; the variables stay. Answers the session's status."""
        call = core.session_action_call(self.id, "interrupt")
        answer: dict[str, Any] = await self.client._json(call)
        return answer

    async def restart(self) -> dict[str, Any]:
        """A fresh kernel in the same directory: variables and imports are gone, files stay."""
        call = core.session_action_call(self.id, "restart")
        answer: dict[str, Any] = await self.client._json(call)
        return answer

    async def close(self) -> bool:
        """Delete the session; nothing to do once it has ended (or if it never started).
        Whether this call ended it (False: it had ended already)."""
        if self.closed or self._id is None:
            return False
        try:
            await self.client._send(core.delete_session_call(self._id))
        except ClientError as exc:
            if not core.session_closed_already(exc):
                raise
            ended = False
        else:
            ended = True
        self.closed = True
        return ended

    async def __aenter__(self) -> AsyncSession:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
