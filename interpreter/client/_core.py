"""What the sync and async clients share, with no I/O: building requests, reading answers
into results or typed errors, the retry policy and the Server-Sent Events parser."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from interpreter import __version__
from interpreter.client._errors import (
    AuthenticationError,
    ClientError,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    RateLimited,
    ServerUnavailable,
)
from interpreter.client._models import OutputEvent

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_WAIT_S = 60.0  # the server's cap on ?wait=
WAIT_MARGIN_S = 5.0  # beyond a job's timeout: its start, its kill grace, its result
MULTIPART_ABOVE_BYTES = 1024 * 1024  # input files over this total go as multipart
MAX_RETRY_AFTER_S = 30.0
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 8.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
STREAM_READ_TIMEOUT_S = 45.0  # the server sends a keep-alive comment every 15 s
RESOLVE_MARGIN_S = 60.0  # a submission with packages is resolved before it is answered
BUILD_MARGIN_S = 360.0  # POST /environments resolves and installs before it answers

FileContent = bytes | str | pathlib.Path
Files = Mapping[str, FileContent]


def base_url(given: str | None) -> str:
    return (given or os.environ.get("INTERPRETER_URL") or DEFAULT_URL).rstrip("/")


def api_key(given: str | None) -> str | None:
    return given if given is not None else (os.environ.get("INTERPRETER_API_KEY") or None)


def default_headers(key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"interpreter-client/{__version__}", "Accept": "application/json"}
    if key:
        headers["X-API-Key"] = key
    return headers


# -- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request, as both transports send it (``retry_reads``: whether a request that may
    have reached the server can be sent again: GETs and keyed submissions)."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str | None, bytes | str, str | None]]] | None = None
    wait_s: float = 0.0  # how long the server may hold the answer (added to the read timeout)
    retry_reads: bool = True

    def kwargs(self, timeout: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "params": self.params or None,
            "headers": self.headers or None,
            "timeout": httpx.Timeout(timeout, read=timeout + self.wait_s),
        }
        if self.json is not None:
            out["json"] = self.json
        if self.files is not None:
            out["files"] = self.files
        return out


def file_bytes(content: FileContent) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode()
    return pathlib.Path(content).read_bytes()


def execute_body(
    code: str,
    *,
    language: str,
    timeout: float | None,
    stdin: str | None,
    environment: Mapping[str, str] | None,
    working_directory: str | None,
    limits: Mapping[str, float] | None,
    metadata: Mapping[str, Any] | None,
    packages: Sequence[str] | None = None,
) -> dict[str, Any]:
    if isinstance(packages, str):
        raise TypeError("packages is a list of requirements, not one string")
    body: dict[str, Any] = {"code": code, "language": language}
    optional = {
        "timeout": timeout,
        "stdin": stdin,
        "environment_variables": dict(environment) if environment is not None else None,
        "working_directory": working_directory,
        "limits": dict(limits) if limits is not None else None,
        "metadata": dict(metadata) if metadata is not None else None,
        "packages": list(packages) if packages else None,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


def execute_call(
    body: dict[str, Any], files: Files | None, *, wait_s: float, idempotency_key: str
) -> Call:
    """``POST /execute``: small files in the JSON body, multipart past ~1 MiB in all. Packages
    are resolved before the server answers: the read timeout allows for it."""
    params = {"wait": _seconds(wait_s)} if wait_s > 0 else {}
    read_s = wait_s + (RESOLVE_MARGIN_S if body.get("packages") else 0.0)
    headers = {"Idempotency-Key": idempotency_key}
    contents = {path: file_bytes(content) for path, content in (files or {}).items()}
    if sum(len(data) for data in contents.values()) <= MULTIPART_ABOVE_BYTES:
        if contents:
            body = {
                **body,
                "input_files": [
                    {"path": path, "content": base64.b64encode(data).decode("ascii")}
                    for path, data in contents.items()
                ],
            }
        return Call("POST", "/execute", params, headers, json=body, wait_s=read_s)
    parts: list[tuple[str, tuple[str | None, bytes | str, str | None]]] = [
        ("request", (None, json.dumps(body), "application/json"))
    ]
    parts += [
        ("files", (path, data, "application/octet-stream")) for path, data in contents.items()
    ]
    return Call("POST", "/execute", params, headers, files=parts, wait_s=read_s)


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def execute_wait_s(timeout: float | None) -> float:
    """``?wait=`` of ``run``: the job's timeout and a margin, at most the server's 60 s."""
    if timeout is None:
        return MAX_WAIT_S
    return min(MAX_WAIT_S, float(timeout) + WAIT_MARGIN_S)


def _seconds(value: float) -> str:
    return f"{value:g}"


def get(path: str, *, wait_s: float = 0.0, **params: Any) -> Call:
    query = {name: value for name, value in params.items() if value is not None}
    if wait_s > 0:
        query["wait"] = _seconds(wait_s)
    return Call("GET", path, query, wait_s=wait_s)


def job_path(job_id: str, *rest: str) -> str:
    return "/".join([f"/jobs/{quote(job_id, safe='')}", *rest])


def file_path(job_id: str, path: str) -> str:
    return job_path(job_id, "files", quote(path.lstrip("/"), safe="/"))


def download_call(job_id: str, path: str, max_bytes: int | None) -> Call:
    """``GET`` of a job's file: whole, or its first ``max_bytes`` (one ``Range``)."""
    call = get(file_path(job_id, path))
    if max_bytes is None:
        return call
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
    return Call("GET", call.path, headers={"Range": f"bytes=0-{max_bytes - 1}"})


def file_head(content: bytes, headers: Mapping[str, str], max_bytes: int) -> tuple[bytes, int]:
    """The first ``max_bytes`` of a ranged answer and the file's size (from ``Content-Range``;
    a server that ignored the range sent it all)."""
    _, _, total = headers.get("content-range", "").rpartition("/")
    return content[:max_bytes], int(total) if total.isdigit() else len(content)


def build_environment_call(packages: Sequence[str]) -> Call:
    """``POST /environments``: safe to send again (an environment is named by its content)."""
    if isinstance(packages, str):
        raise TypeError("packages is a list of requirements, not one string")
    return Call("POST", "/environments", json={"packages": list(packages)}, wait_s=BUILD_MARGIN_S)


def delete_environment_call(environment_id: str) -> Call:
    """``DELETE /environments/{id}``: sent again only when it never reached the server (a
    second delete of what the first removed would be a 404)."""
    path = f"/environments/{quote(environment_id, safe='')}"
    return Call("DELETE", path, retry_reads=False)


# -- sessions ------------------------------------------------------------------------------------


def session_body(
    *,
    language: str = "python",
    packages: Sequence[str],
    limits: Mapping[str, float] | None,
    idle_timeout_s: float | None,
    max_lifetime_s: float | None,
    environment_variables: Mapping[str, str] | None,
) -> dict[str, Any]:
    if isinstance(packages, str):
        raise TypeError("packages is a list of requirements, not one string")
    body: dict[str, Any] = {"language": language, "packages": list(packages)}
    optional = {
        "limits": dict(limits) if limits is not None else None,
        "idle_timeout_s": idle_timeout_s,
        "max_lifetime_s": max_lifetime_s,
        "environment_variables": (
            dict(environment_variables) if environment_variables is not None else None
        ),
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


def create_session_call(body: dict[str, Any]) -> Call:
    """``POST /sessions``: answered once the kernel is ready, its packages installed first (the
    read timeout allows for it). Not sent again once it may have reached the server: that could
    start a second session."""
    return Call("POST", "/sessions", json=body, wait_s=BUILD_MARGIN_S, retry_reads=False)


def session_path(session_id: str, *rest: str) -> str:
    return "/".join([f"/sessions/{quote(session_id, safe='')}", *rest])


def session_execute_call(session_id: str, code: str, timeout: float | None, wait_s: float) -> Call:
    """``POST /sessions/{id}/execute?wait=``: a cell runs once only, so it is sent again only
    when it never reached the server (``wait=0``: answer at once with the job id)."""
    body: dict[str, Any] = {"code": code}
    if timeout is not None:
        body["timeout"] = timeout
    params = {"wait": _seconds(wait_s)}
    return Call(
        "POST",
        session_path(session_id, "execute"),
        params,
        json=body,
        wait_s=wait_s,
        retry_reads=False,
    )


def session_action_call(session_id: str, action: str) -> Call:
    """``POST /sessions/{id}/interrupt`` or ``/restart`` (not sent twice: a second interrupt
    could stop the next cell)."""
    return Call("POST", session_path(session_id, action), retry_reads=False)


def delete_session_call(session_id: str) -> Call:
    """``DELETE /sessions/{id}``: safe to send again, as a 404 means it ended already."""
    return Call("DELETE", session_path(session_id))


def session_closed_already(error: ClientError) -> bool:
    """A 404 to ``DELETE /sessions/{id}``: it ended already (deleted, reaped, a restart)."""
    return error.status_code == 404


def results_call(job_id: str, wait_s: float) -> Call:
    return get(job_path(job_id, "results"), wait_s=min(MAX_WAIT_S, max(0.0, wait_s)))


def cancel_call(job_id: str) -> Call:
    return Call("POST", job_path(job_id, "cancel"), retry_reads=False)


def stream_headers(last_event_id: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers


def stream_timeout(timeout: float) -> httpx.Timeout:
    return httpx.Timeout(timeout, read=max(timeout, STREAM_READ_TIMEOUT_S))


def is_execute_answer_final(body: dict[str, Any]) -> bool:
    """Whether ``POST /execute?wait=`` answered with a full result (it carries ``stdout``)."""
    return "stdout" in body


# -- answers -------------------------------------------------------------------------------------


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def error_for(status: int, headers: Mapping[str, str], content: bytes) -> ClientError:
    """The typed error of an answer that is not 2xx, from its JSON ``detail``."""
    detail = f"the server answered {status}"
    errors: list[dict[str, Any]] | None = None
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get("detail"), str):
            detail = body["detail"]
        elif body.get("detail") is not None:
            detail = json.dumps(body["detail"])
        if isinstance(body.get("errors"), list):
            errors = body["errors"]
    elif content:
        detail = f"{detail}: {content[:200].decode('utf-8', errors='replace')}"
    if status == 401:
        return AuthenticationError(detail, status, errors=errors)
    if status == 404:
        return JobNotFound(detail, status, errors=errors)
    if status == 409:
        return JobConflict(detail, status, errors=errors)
    if status in (400, 413, 416, 422):
        return InvalidRequest(detail, status, errors=errors)
    if status == 429:
        return RateLimited(detail, status, retry_after=retry_after_s(headers), errors=errors)
    if status in (502, 503, 504):
        return ServerUnavailable(detail, status, retry_after=retry_after_s(headers), errors=errors)
    return ClientError(detail, status, errors=errors)


def json_body(content: bytes, status: int) -> Any:
    try:
        return json.loads(content)
    except ValueError as exc:
        raise ClientError(f"the server's answer is not JSON: {content[:200]!r}", status) from exc


def unreachable(url: str, exc: Exception) -> ServerUnavailable:
    return ServerUnavailable(f"could not reach {url}: {exc!r}", None)


# -- retries -------------------------------------------------------------------------------------


def backoff_s(attempt: int) -> float:
    """The pause before retry ``attempt`` (1, 2, ...) of a request that got no answer."""
    delay: float = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    return delay * (0.5 + random.random() / 2)


def retry_delay_s(error: ClientError, attempt: int) -> float:
    """The pause before retry ``attempt`` after ``error`` (a retryable status)."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return float(min(MAX_RETRY_AFTER_S, retry_after))
    return backoff_s(attempt)


def retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES


def retryable_exception(exc: Exception, call_retry_reads: bool) -> bool:
    """A transport error worth another try: one that never reached the server always; one that
    may have (a dropped connection, a read timeout) only when sending again is safe."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return call_retry_reads and isinstance(exc, httpx.TransportError)


# -- Server-Sent Events --------------------------------------------------------------------------


class EventParser:
    """Lines of a ``text/event-stream`` in, events out (``feed`` answers one at a blank line)."""

    def __init__(self) -> None:
        self._event = "message"
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> OutputEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> OutputEvent | None:
        if not self._data:
            self._event = "message"
            return None
        text = "\n".join(self._data)
        try:
            data = json.loads(text)
        except ValueError:
            data = {"text": text}
        event = OutputEvent(self._event, self._id, data if isinstance(data, dict) else {})
        self._event, self._data = "message", []
        return event


class StreamState:
    """Where a stream is, across reconnections: the last id to resume from, and whether the
    status event a resumed stream opens with repeats the last one seen (then it is skipped)."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.last_status: str | None = None
        self.resumed = False
        self.done = False

    def accept(self, event: OutputEvent) -> bool:
        """Whether to hand ``event`` to the caller; keeps the state up to date."""
        opening_status = self.resumed
        self.resumed = False
        if event.id is not None:
            self.last_id = event.id
        if event.event == "end":
            self.done = True
        if event.event == "status":
            status = event.data.get("status")
            repeated = opening_status and status == self.last_status
            self.last_status = status if isinstance(status, str) else None
            return not repeated
        return True

    def reconnect(self) -> None:
        self.resumed = True


def ended_early(job_id: str) -> ServerUnavailable:
    return ServerUnavailable(f"the stream of job {job_id} kept ending before its end event", None)
