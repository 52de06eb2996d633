"""A LangChain tool that runs Python in a session of the server (``pip install
'interpreter-server[langchain]'``)::

    from interpreter.integrations.langchain import InterpreterPythonTool

    python = InterpreterPythonTool("http://127.0.0.1:8000", api_key="...", packages=["pandas"])
    agent = create_agent(model, tools=[python])  # any LangChain / LangGraph agent
    ...
    python.close()  # deletes the session

Every call runs its code in one session (a sandboxed ipykernel), as a notebook cell: variables,
imports and files persist from call to call. The tool answers content and artifact
(``response_format="content_and_artifact"``): the content is the text a model reads (stdout,
stderr, the value of the last expression, the error), the artifact a dict with the images the
cell displayed as PNG bytes (``"images"``) and the server's whole result (``"result"``). The tool
speaks HTTP to the server's ``/sessions`` routes itself (``httpx``), with no other part of this
package.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForToolRun
from langchain_core.tools import ArgsSchema, BaseTool, ToolException
from pydantic import BaseModel, Field, PrivateAttr

from interpreter.integrations._sessions import HttpSession, RequestFailed, SessionGone

__all__ = ["InterpreterPythonTool", "PythonInput"]

DESCRIPTION = (
    "Run Python code in a persistent, sandboxed Python session (a Jupyter kernel): variables, "
    "imports and files are kept between calls. Answers what the code printed (stdout, "
    "stderr), the value of its last expression, and the error if it raised. Plots shown with "
    "matplotlib are captured as images."
)


class PythonInput(BaseModel):
    """The tool's arguments."""

    code: str = Field(description="Python code to run, as one notebook cell")


class InterpreterPythonTool(BaseTool):
    """A LangChain tool whose code runs in one session of the server at ``base_url`` (else
    ``$INTERPRETER_URL``) with ``api_key`` (else ``$INTERPRETER_API_KEY``).

    The session starts at the first call, with ``packages`` installed from PyPI (the server
    builds its environment with uv; they are fixed for the session's life), and ends with
    ``close()`` (or the ``with`` block). ``timeout_s`` is each call's timeout (None: the
    server's default); ``limits``, ``idle_timeout_s``, ``max_lifetime_s`` and
    ``environment_variables`` go to ``POST /sessions``. When the session has ended on the server
    (idle too long, too old, its kernel killed for memory), the next call starts a new one and
    its content begins with a note saying the earlier variables are gone. A server that refuses
    a call or cannot be reached raises ``ToolException``, which the tool hands to the model as
    its answer (``handle_tool_error=True``). Calls are taken one at a time; the async
    ``ainvoke`` runs the sync call in a thread, as ``BaseTool`` does.
    """

    name: str = "python"
    description: str = DESCRIPTION
    args_schema: ArgsSchema | None = PythonInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"

    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False, exclude=True)
    packages: list[str] = Field(default_factory=list)
    timeout_s: float | None = None
    limits: dict[str, float] | None = None
    idle_timeout_s: float | None = None
    max_lifetime_s: float | None = None
    environment_variables: dict[str, str] | None = Field(default=None, repr=False)

    _session: HttpSession | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **kwargs: Any):
        kwargs.setdefault("handle_tool_error", True)
        super().__init__(base_url=base_url, api_key=api_key, **kwargs)

    @property
    def session_id(self) -> str | None:
        """The id of the session the code runs in (None before the first call and after
        ``close()``)."""
        return self._session.id if self._session is not None else None

    def _run(
        self, code: str, run_manager: CallbackManagerForToolRun | None = None
    ) -> tuple[str, dict[str, Any]]:
        with self._lock:
            session = self._open()
            note = None
            try:
                if session.id is None:
                    session.start()
                try:
                    result = session.run(code, self.timeout_s)
                except SessionGone as gone:
                    old = session.id
                    session.start()
                    session.delete(old)
                    note = f"Note: {gone.reason}; this code ran in a new session, without the "
                    note += "variables of earlier calls."
                    result = session.run(code, self.timeout_s)
            except RequestFailed as exc:
                raise ToolException(str(exc)) from exc
        images = _images(result)
        return _content(result, note, len(images)), {"images": images, "result": result}

    def close(self) -> None:
        """Delete the session and close the HTTP client; a later call starts a new session.
        Raises ``ToolException`` when the server refused the deletion or could not be reached
        (the server then ends the session after its idle timeout)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except RequestFailed as exc:
                raise ToolException(f"the session could not be deleted: {exc}") from exc

    def __enter__(self) -> InterpreterPythonTool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> HttpSession:
        if self._session is None:
            options = {
                "limits": self.limits,
                "idle_timeout_s": self.idle_timeout_s,
                "max_lifetime_s": self.max_lifetime_s,
                "environment_variables": self.environment_variables,
            }
            self._session = HttpSession(self.base_url, self.api_key, options, self.packages)
        return self._session


def _content(result: Mapping[str, Any], note: str | None, images: int) -> str:
    """What the model reads: the cell's output, value and error, each labelled."""
    parts = [note] if note else []
    for stream in ("stdout", "stderr"):
        text = str(result.get(stream) or "")
        if text:
            parts.append(f"{stream}:\n{text.rstrip()}")
    value = _last_value(result)
    if value is not None:
        parts.append(f"result: {value}")
    if images:
        parts.append(f"images: {images} displayed")
    error = result.get("error")
    if _raised(result) and isinstance(error, dict):
        parts.append(f"error: {error.get('name')}: {error.get('value')}\n{error.get('traceback')}")
    elif result.get("status") != "completed":  # a timeout, a cancel, the memory limit
        parts.append(f"error: {result.get('error_message') or result.get('status')}")
    return "\n".join(parts) if parts else "(no output)"


def _raised(result: Mapping[str, Any]) -> bool:
    """Whether the cell ended by raising (rather than by a timeout, a cancel, a limit)."""
    return result.get("status") == "failed" and result.get("termination_reason") == "exit"


def _last_value(result: Mapping[str, Any]) -> str | None:
    for bundle in result.get("results") or []:
        if bundle.get("type") == "execute_result":
            text = (bundle.get("data") or {}).get("text/plain")
            return str(text) if text is not None else None
    return None


def _images(result: Mapping[str, Any]) -> list[bytes]:
    """The PNG images of every display bundle, decoded."""
    return [
        base64.b64decode(bundle["data"]["image/png"])
        for bundle in result.get("results") or []
        if isinstance((bundle.get("data") or {}).get("image/png"), str)
    ]


# -- the /sessions routes ------------------------------------------------------------------------
