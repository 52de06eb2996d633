"""The synchronous client: ``Client`` and ``Job`` over ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
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

__all__ = ["Client", "Job", "Session"]


class Client:
    """A client of one server. ``base_url`` defaults to ``$INTERPRETER_URL`` (else
    http://127.0.0.1:8000), ``api_key`` to ``$INTERPRETER_API_KEY`` (sent as ``X-API-Key``).
    ``timeout`` bounds each request (long polls add their wait); ``max_retries`` the retries of
    one request after a 429, 503 or a lost connection."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = core.base_url(base_url)
        self.timeout = timeout
        self.max_retries = max_retries
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=core.default_headers(core.api_key(api_key)),
            timeout=timeout,
            transport=transport,
        )

    # -- plumbing --------------------------------------------------------------------------------
    def _send(self, call: core.Call) -> httpx.Response:
        """Send ``call``, retrying as the policy says; a 2xx answer, else a typed error."""
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, **call.kwargs(self.timeout))
            except httpx.TransportError as exc:
                if attempt >= self.max_retries or not core.retryable_exception(
                    exc, call.retry_reads
                ):
                    raise core.unreachable(self.base_url, exc) from exc
                attempt += 1
                time.sleep(core.backoff_s(attempt))
                continue
            if response.is_success:
                return response
            error = core.error_for(response.status_code, response.headers, response.content)
            if attempt >= self.max_retries or not core.retryable_status(response.status_code):
                raise error
            attempt += 1
            time.sleep(core.retry_delay_s(error, attempt))

    def _json(self, call: core.Call) -> Any:
        response = self._send(call)
        return core.json_body(response.content, response.status_code)

    # -- jobs ------------------------------------------------------------------------------------
    def run(
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
        answer = self._json(call)
        if core.is_execute_answer_final(answer) and answer.get("status") in FINAL_STATUSES:
            return Result.from_dict(answer)
        return self.job(str(answer["job_id"])).wait()

    def submit(
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
    ) -> Job:
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
        answer = self._json(call)
        return self.job(str(answer["job_id"]))

    def job(self, job_id: str) -> Job:
        """A handle on an existing job (sends no request)."""
        return Job(self, job_id)

    def jobs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """One page of ``GET /jobs``, newest first."""
        answer = self._json(core.get("/jobs", status=status, limit=limit))
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
    ) -> Session:
        """Start a session: a Python kernel in the server's sandbox that keeps its variables,
        imports and files between ``run`` calls. Answers once the kernel is ready (the first
        time a set of ``packages`` is asked for, the server installs it first). As a context
        manager the session is deleted on exit; else ``close()`` it (the server also ends it
        after ``idle_timeout_s`` idle and ``max_lifetime_s`` in all). ``limits``: the whole
        session's, as ``run``'s."""
        body = core.session_body(
            language=language,
            packages=packages,
            limits=limits,
            idle_timeout_s=idle_timeout_s,
            max_lifetime_s=max_lifetime_s,
            environment_variables=environment_variables,
        )
        answer = self._json(core.create_session_call(body))
        return Session(self, str(answer["session_id"]))

    def sessions(self) -> list[dict[str, Any]]:
        """This key's sessions (each the body of ``GET /sessions/{id}``)."""
        answer = self._json(core.get("/sessions"))
        return list(answer["sessions"])

    # -- package environments --------------------------------------------------------------------
    def environments(self) -> list[EnvironmentInfo]:
        """The package environments on the server's disk, the most recently used first."""
        answer = self._json(core.get("/environments"))
        return [EnvironmentInfo.from_dict(entry) for entry in answer]

    def build_environment(self, packages: Sequence[str]) -> EnvironmentInfo:
        """Resolve and install ``packages`` now, so that the first job asking for them starts
        at once (``cached``: it existed already). Shared by every key of the server."""
        answer = self._json(core.build_environment_call(packages))
        return EnvironmentInfo.from_dict(answer)

    def delete_environment(self, environment_id: str) -> None:
        """Remove an environment no job uses: ``JobNotFound`` when there is none by that id,
        ``JobConflict`` while a running job uses it."""
        self._send(core.delete_environment_call(environment_id))

    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._json(core.get("/health"))
        return answer

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Job:
    """A handle on one job of a ``Client``."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> str:
        answer = self.client._json(core.get(core.job_path(self.id, "status")))
        return str(answer["status"])

    def full_result(self) -> dict[str, Any]:
        """The raw ``GET /jobs/{id}/results`` body, final or not."""
        answer: dict[str, Any] = self.client._json(core.results_call(self.id, 0.0))
        return answer

    def wait(self, timeout: float | None = None) -> Result:
        """Long poll until the job is final and answer its result; ``WaitTimeout`` past
        ``timeout`` seconds (None: no bound)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = core.MAX_WAIT_S if deadline is None else deadline - time.monotonic()
            answer = self.client._json(core.results_call(self.id, left))
            if answer.get("status") in FINAL_STATUSES:
                return Result.from_dict(answer)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"job {self.id} is still {answer.get('status')} after {timeout} s"
                )

    def result(self) -> Result:
        return self.wait()

    def cancel(self) -> dict[str, Any]:
        """Cancel the job: the server's answer (``JobConflict`` once it is final)."""
        answer: dict[str, Any] = self.client._json(core.cancel_call(self.id))
        return answer

    def files(self) -> list[FileInfo]:
        answer = self.client._json(core.get(core.job_path(self.id, "files")))
        return [FileInfo.from_dict(entry) for entry in answer["files"]]

    def download(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """One file of the finished job's directory (``path`` relative to it); with
        ``max_bytes``, only its first ``max_bytes`` bytes (one ranged request)."""
        if max_bytes is not None:
            return self.download_head(path, max_bytes)[0]
        return self.client._send(core.download_call(self.id, path, None)).content

    def download_head(self, path: str, max_bytes: int) -> tuple[bytes, int]:
        """The first ``max_bytes`` bytes of a file of the job's directory and the file's size
        in bytes, from one ranged request (an empty file: ``(b"", 0)``)."""
        try:
            response = self.client._send(core.download_call(self.id, path, max_bytes))
        except InvalidRequest as exc:
            if exc.status_code == 416:  # bytes=0-... of an empty file
                return b"", 0
            raise
        return core.file_head(response.content, response.headers, max_bytes)

    def archive(self) -> bytes:
        """The finished job's directory as a ``.tar.gz``."""
        return self.client._send(core.get(core.job_path(self.id, "archive"))).content

    def stream(self) -> Iterator[OutputEvent]:
        """The job's events as they come, until ``end``. A dropped connection is resumed from
        the last event's id: no output is lost or repeated."""
        state = core.StreamState()
        attempt = 0
        http = self.client._http
        while not state.done:
            try:
                with http.stream(
                    "GET",
                    core.job_path(self.id, "stream"),
                    headers=core.stream_headers(state.last_id),
                    timeout=core.stream_timeout(self.client.timeout),
                ) as response:
                    if not response.is_success:
                        response.read()
                        error = core.error_for(
                            response.status_code, response.headers, response.content
                        )
                        if attempt >= self.client.max_retries or not core.retryable_status(
                            response.status_code
                        ):
                            raise error
                        attempt += 1
                        time.sleep(core.retry_delay_s(error, attempt))
                        state.reconnect()
                        continue
                    parser = core.EventParser()
                    for line in response.iter_lines():
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
                time.sleep(core.backoff_s(attempt))
            else:  # the stream ended before `end`
                if attempt >= self.client.max_retries:
                    raise core.ended_early(self.id)
                attempt += 1
            state.reconnect()  # resume after the last event received


class Session:
    """A session of a ``Client`` (``Client.session`` starts one; ``Session(client, id)`` is a
    handle on an existing one and sends no request). Its cells run one at a time, each a job;
    ``JobNotFound`` once it ended, ``JobConflict`` while its kernel is dead (the server's detail
    says why; ``restart`` makes a fresh one)."""

    def __init__(self, client: Client, session_id: str) -> None:
        self.client = client
        self.id = session_id
        self.closed = False

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    def info(self) -> dict[str, Any]:
        """The session's status (``GET /sessions/{id}``): ``status`` (idle, busy, dead),
        ``executions``, ``expires_at``, ``environment`` (its packages), ``error``, ..."""
        answer: dict[str, Any] = self.client._json(core.get(core.session_path(self.id)))
        return answer

    def run(self, code: str, timeout: float | None = None) -> CellResult:
        """Run ``code`` as a notebook cell of the session's kernel and answer its result once
        final: what earlier cells defined is there. ``timeout``: the cell's seconds, its wait
        behind the session's earlier cells included (the server's job timeout if None)."""
        call = core.session_execute_call(self.id, code, timeout, core.execute_wait_s(timeout))
        answer = self.client._json(call)
        if core.is_execute_answer_final(answer) and answer.get("status") in FINAL_STATUSES:
            return CellResult.from_dict(answer)
        return CellResult.from_dict(self.client.job(str(answer["job_id"])).wait().raw)

    def submit(self, code: str, timeout: float | None = None) -> Job:
        """Queue ``code`` as a cell and answer at once with its job (``wait``, ``stream``,
        ``cancel``; ``CellResult.from_dict(job.wait().raw)`` reads it as a cell)."""
        answer = self.client._json(core.session_execute_call(self.id, code, timeout, 0.0))
        return self.client.job(str(answer["job_id"]))

    def interrupt(self) -> dict[str, Any]:
        """Interrupt the running cell (a ``KeyboardInterrupt``); the variables stay. Answers
        the session's status."""
        answer: dict[str, Any] = self.client._json(core.session_action_call(self.id, "interrupt"))
        return answer

    def restart(self) -> dict[str, Any]:
        """A fresh kernel in the same directory: variables and imports are gone, files stay."""
        answer: dict[str, Any] = self.client._json(core.session_action_call(self.id, "restart"))
        return answer

    def close(self) -> bool:
        """Delete the session (its kernel is killed); nothing to do once it has ended.
        Whether this call ended it (False: it had ended already)."""
        if self.closed:
            return False
        try:
            self.client._send(core.delete_session_call(self.id))
        except ClientError as exc:
            if not core.session_closed_already(exc):
                raise
            ended = False
        else:
            ended = True
        self.closed = True
        return ended

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
