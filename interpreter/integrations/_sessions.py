"""One session of the server over HTTP (``/sessions``), for the framework adapters that keep
a session per tool or executor (``smolagents``, ``langchain``): start it, run cells, delete it,
and tell a refused execution of an ended session from other refusals."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL_STATUSES = frozenset({"completed", "failed", "timeout", "cancelled"})
WAIT_S = 60.0  # the server's cap on ?wait=
CREATE_TIMEOUT_S = 600.0  # POST /sessions answers once the packages are installed


class RequestFailed(RuntimeError):
    """The server refused a request, or could not be reached."""


class SessionGone(RequestFailed):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HttpSession:
    """One session at a time, over HTTP: ``start`` creates one (``packages``), ``run`` executes
    a cell and answers its full result, ``close`` deletes it."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        options: dict[str, Any],
        packages: Sequence[str],
    ) -> None:
        url = (base_url or os.environ.get("INTERPRETER_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("INTERPRETER_API_KEY")
        headers = {"Accept": "application/json", **({"X-API-Key": key} if key else {})}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=WAIT_S + 30)
        self._options = {name: value for name, value in options.items() if value is not None}
        self.id: str | None = None
        self.packages = list(packages)

    def start(self) -> None:
        if self._http.is_closed:
            raise RequestFailed("the session was deleted (cleanup)")
        body = {"language": "python", "packages": self.packages, **self._options}
        session = self._request("POST", "/sessions", 201, json=body, timeout=CREATE_TIMEOUT_S)
        self.id = str(session["session_id"])

    def run(self, code: str, timeout_s: float | None) -> dict[str, Any]:
        body: dict[str, Any] = {"code": code}
        if timeout_s is not None:
            body["timeout"] = timeout_s
        response = self._send(
            "POST", f"/sessions/{self.id}/execute", params={"wait": WAIT_S}, json=body
        )
        if response.status_code in (404, 409):
            self._check_alive(response)
        result = self._read(response, 200)
        while result.get("status") not in FINAL_STATUSES:  # ends by the execution's timeout
            path = f"/jobs/{result['job_id']}/results"
            result = self._request("GET", path, 200, params={"wait": WAIT_S})
        return result

    def delete(self, session_id: str | None) -> None:
        if session_id is not None:
            response = self._send("DELETE", f"/sessions/{session_id}")
            if response.status_code != 404:  # already gone: as good as deleted
                self._read(response, 200)

    def close(self) -> None:
        if self._http.is_closed:
            return
        try:
            self.delete(self.id)
        finally:
            self.id = None
            self._http.close()

    def _check_alive(self, response: httpx.Response) -> None:
        """Raise ``SessionGone`` when a refused execution's session has ended."""
        if response.status_code == 404:
            raise SessionGone(f"the session ended ({_detail(response)})")
        info = self._send("GET", f"/sessions/{self.id}")
        if info.status_code == 404:
            raise SessionGone(f"the session ended ({_detail(response)})")
        session = self._read(info, 200)
        if session.get("status") == "dead":
            raise SessionGone(f"the session's kernel died ({session.get('error')})")

    def _request(self, method: str, path: str, expected: int, **kwargs: Any) -> dict[str, Any]:
        return self._read(self._send(method, path, **kwargs), expected)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RequestFailed(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _read(response: httpx.Response, expected: int) -> dict[str, Any]:
        request = response.request
        if response.status_code != expected:
            raise RequestFailed(
                f"{request.method} {request.url.path} answered {response.status_code}: "
                f"{_detail(response)}"
            )
        body: dict[str, Any] = response.json()
        return body


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text
    return detail if isinstance(detail, str) else json.dumps(detail)
