"""What the client returns: a job's result, a file of its directory, an event of its stream, a
package environment of the server, the result of a session's cell."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FINAL_STATUSES",
    "CellResult",
    "EnvironmentInfo",
    "FileInfo",
    "OutputEvent",
    "PackageEnvironment",
    "Result",
]

FINAL_STATUSES = frozenset({"completed", "failed", "timeout", "cancelled"})


def _ms(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class PackageEnvironment:
    """The Python packages a job ran with (``environment`` of its result): the environment's
    ``id`` (``Client.environments()`` lists them), every package installed (name to version),
    whether it existed already (``cached``: nothing was installed for this job), and the time
    spent resolving the request at submission (None: the server's default packages) and
    installing before the job started (0 when cached)."""

    id: str
    packages: dict[str, str]
    cached: bool
    resolve_ms: float | None
    install_ms: float

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> PackageEnvironment:
        return cls(
            id=str(body["id"]),
            packages={str(k): str(v) for k, v in (body.get("packages") or {}).items()},
            cached=bool(body.get("cached")),
            resolve_ms=_ms(body.get("resolve_ms")),
            install_ms=float(body.get("install_ms") or 0.0),
        )


@dataclass(frozen=True)
class Result:
    """A job's result (the body of ``GET /jobs/{id}/results``; ``raw`` holds all of it)."""

    job_id: str
    status: str
    stdout: str
    stderr: str
    exit_code: int | None
    signal: int | None
    termination_reason: str | None
    execution_time_ms: int | None
    files_created: list[str]
    files_modified: list[str]
    files_deleted: list[str]
    error_message: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    environment: PackageEnvironment | None = None  # None: the job ran without packages

    @property
    def ok(self) -> bool:
        """Completed with exit code 0."""
        return self.status == "completed" and self.exit_code == 0

    @property
    def timed_out(self) -> bool:
        return self.status == "timeout" or self.termination_reason == "timeout"

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Result:
        return cls(
            job_id=str(body["job_id"]),
            status=str(body["status"]),
            stdout=body.get("stdout") or "",
            stderr=body.get("stderr") or "",
            exit_code=body.get("exit_code"),
            signal=body.get("signal"),
            termination_reason=body.get("termination_reason"),
            execution_time_ms=body.get("execution_time_ms"),
            files_created=list(body.get("files_created") or []),
            files_modified=list(body.get("files_modified") or []),
            files_deleted=list(body.get("files_deleted") or []),
            error_message=body.get("error_message"),
            raw=body,
            environment=(
                PackageEnvironment.from_dict(body["environment"])
                if isinstance(body.get("environment"), dict)
                else None
            ),
        )


@dataclass(frozen=True)
class FileInfo:
    """A regular file of a finished job's working directory (``GET /jobs/{id}/files``)."""

    path: str
    size: int
    sha256: str | None
    created_at: str
    modified_at: str

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> FileInfo:
        return cls(
            path=str(body["path"]),
            size=int(body["size"]),
            sha256=body.get("sha256"),
            created_at=str(body.get("created_at")),
            modified_at=str(body.get("modified_at")),
        )


@dataclass(frozen=True)
class EnvironmentInfo:
    """A package environment on the server's disk (``GET /environments``; ``POST
    /environments`` adds ``cached``, ``resolve_ms`` and ``install_ms``, None in a listing).
    ``requirements`` is what was asked for, ``packages`` every package installed (name to
    version); ``in_use``: a running job holds it, it cannot be deleted now."""

    id: str
    requirements: list[str]
    packages: dict[str, str]
    size_bytes: int
    created_at: str
    last_used_at: str
    in_use: bool
    cached: bool | None = None
    resolve_ms: float | None = None
    install_ms: float | None = None

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> EnvironmentInfo:
        return cls(
            id=str(body["id"]),
            requirements=[str(r) for r in body.get("requirements") or []],
            packages={str(k): str(v) for k, v in (body.get("packages") or {}).items()},
            size_bytes=int(body.get("size_bytes") or 0),
            created_at=str(body.get("created_at")),
            last_used_at=str(body.get("last_used_at")),
            in_use=bool(body.get("in_use")),
            cached=body.get("cached"),
            resolve_ms=_ms(body.get("resolve_ms")),
            install_ms=_ms(body.get("install_ms")),
        )


@dataclass(frozen=True)
class OutputEvent:
    """One Server-Sent Event of ``GET /jobs/{id}/stream``: ``event`` is ``stdout``, ``stderr``,
    ``status`` or ``end``; ``id`` the resume point; ``data`` its JSON."""

    event: str
    id: str | None
    data: dict[str, Any]

    @property
    def bytes(self) -> bytes:
        """The exact output bytes of a ``stdout`` / ``stderr`` event (b"" for the others)."""
        if self.event not in ("stdout", "stderr"):
            return b""
        encoded = self.data.get("base64")
        if isinstance(encoded, str):
            try:
                return base64.b64decode(encoded)
            except (binascii.Error, ValueError):
                pass
        return str(self.data.get("text", "")).encode()

    @property
    def text(self) -> str:
        """The output text of a ``stdout`` / ``stderr`` event ("" for the others): bytes that
        are not UTF-8 (sent in base64) become U+FFFD."""
        if self.event not in ("stdout", "stderr"):
            return ""
        if "base64" in self.data:
            return self.bytes.decode("utf-8", errors="replace")
        return str(self.data.get("text", ""))

    @property
    def offset(self) -> int | None:
        value = self.data.get("offset")
        return value if isinstance(value, int) else None


@dataclass(frozen=True)
class CellResult:
    """The result of one execution in a session (``Session.run``), a job of its own: its
    ``status`` (``completed`` when the cell ran to its end; ``failed`` when it raised, with
    ``error``; ``timeout``, ``cancelled``), the cell's prints, its display outputs (``results``:
    ``{"type": "execute_result" | "display_data", "data": {mime: value}, "truncated": bool}``)
    and its exception (``error``: ``name``, ``value``, ``traceback`` as plain text)."""

    job_id: str
    status: str
    stdout: str
    stderr: str
    results: list[dict[str, Any]]
    error: dict[str, Any] | None
    error_message: str | None
    termination_reason: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """The cell ran to its end."""
        return self.status == "completed"

    @property
    def text(self) -> str | None:
        """The ``text/plain`` of the cell's value (its last expression), None without one."""
        for bundle in self.results:
            if bundle.get("type") == "execute_result":
                value = _data(bundle).get("text/plain")
                return value if isinstance(value, str) else None
        return None

    @property
    def images(self) -> list[bytes]:
        """Every PNG image the cell displayed (a plot, ``display(Image(...))``), as bytes."""
        images = []
        for bundle in self.results:
            encoded = _data(bundle).get("image/png")
            if isinstance(encoded, str):
                try:
                    images.append(base64.b64decode(encoded))
                except (binascii.Error, ValueError):
                    continue
        return images

    @property
    def html(self) -> list[str]:
        """Every ``text/html`` output of the cell (a DataFrame's table, say)."""
        found = (_data(bundle).get("text/html") for bundle in self.results)
        return [value for value in found if isinstance(value, str)]

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> CellResult:
        error = body.get("error")
        return cls(
            job_id=str(body["job_id"]),
            status=str(body["status"]),
            stdout=body.get("stdout") or "",
            stderr=body.get("stderr") or "",
            results=[entry for entry in body.get("results") or [] if isinstance(entry, dict)],
            error=error if isinstance(error, dict) else None,
            error_message=body.get("error_message"),
            termination_reason=body.get("termination_reason"),
            raw=body,
        )


def _data(bundle: dict[str, Any]) -> dict[str, Any]:
    data = bundle.get("data")
    return data if isinstance(data, dict) else {}
