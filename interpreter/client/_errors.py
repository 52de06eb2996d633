"""The client's errors: one class per kind of refusal, each with the server's ``detail``."""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "ClientError",
    "InvalidRequest",
    "JobConflict",
    "JobNotFound",
    "RateLimited",
    "ServerUnavailable",
    "WaitTimeout",
]


class ClientError(Exception):
    """Any error the client raises: ``status_code`` (None without an HTTP answer) and ``detail``
    (the server's one-sentence ``detail``, or what went wrong); ``errors`` for a 422's list."""

    def __init__(
        self,
        detail: str,
        status_code: int | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail if status_code is None else f"HTTP {status_code}: {detail}")
        self.detail = detail
        self.status_code = status_code
        self.errors = errors or []


class AuthenticationError(ClientError):
    """401: no valid API key."""


class JobNotFound(ClientError):
    """404: no such job for this key (another key's job too), no such file of a job, no such
    package environment, or no such session (another key's, or one that ended)."""


class InvalidRequest(ClientError):
    """400, 413, 416 or 422: the server refused the request as written. ``kind`` says which
    way, for machines: for packages that cannot be had, ``not_found``, ``unsatisfiable``,
    ``no_wheel`` or ``install_failed``."""

    @property
    def kind(self) -> str | None:
        """The ``type`` of the first of the server's ``errors`` (None without one)."""
        first = self.errors[0] if self.errors else None
        kind = first.get("type") if isinstance(first, dict) else None
        return kind if isinstance(kind, str) else None


class JobConflict(ClientError):
    """409: the state of the job, environment or session forbids it (cancelling a finished
    job, files of a running one, deleting an environment a running job uses, running code in
    a session whose kernel is dead or has too many cells waiting)."""


class RateLimited(ClientError):
    """429: over the rate limit or the key's pending-job cap, still so after the retries."""

    def __init__(
        self,
        detail: str,
        status_code: int | None = 429,
        *,
        retry_after: float | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail, status_code, errors=errors)
        self.retry_after = retry_after


class ServerUnavailable(ClientError):
    """503 (shutting down, pending-job cap, store unavailable), a gateway error, or no
    connection at all (``status_code`` None), still so after the retries."""

    def __init__(
        self,
        detail: str,
        status_code: int | None = 503,
        *,
        retry_after: float | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail, status_code, errors=errors)
        self.retry_after = retry_after


class WaitTimeout(ClientError, TimeoutError):
    """``Job.wait(timeout=...)`` gave up before the job was final (the job goes on)."""
