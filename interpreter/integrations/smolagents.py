"""A smolagents remote Python executor on a session of the server (``pip install
'interpreter-server[smolagents]'``)::

    from smolagents import CodeAgent
    from interpreter.integrations.smolagents import InterpreterExecutor

    executor = InterpreterExecutor("http://127.0.0.1:8000", api_key="...", packages=["pandas"])
    with CodeAgent(tools=[], model=..., executor=executor) as agent:  # leaving deletes the session
        agent.run("...")

Every code action of the agent runs in one session (a sandboxed ipykernel), so what one step
defines the next one uses. ``final_answer(...)`` is detected as smolagents' own remote executors
detect it: the tool, patched by ``send_tools``, raises ``FinalAnswerException`` carrying the
serialized answer, which the executor reads back. The executor speaks HTTP to the server's
``/sessions`` routes itself (``httpx``), with no other part of this package.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from io import BytesIO
from typing import Any

import PIL.Image
from smolagents.local_python_executor import CodeOutput  # type: ignore[import-untyped]
from smolagents.monitoring import AgentLogger, LogLevel  # type: ignore[import-untyped]
from smolagents.remote_executors import RemotePythonExecutor  # type: ignore[import-untyped]
from smolagents.serialization import SerializationError  # type: ignore[import-untyped]
from smolagents.tools import Tool  # type: ignore[import-untyped]
from smolagents.utils import AgentError  # type: ignore[import-untyped]

from interpreter.integrations._sessions import HttpSession, RequestFailed, SessionGone

__all__ = ["InterpreterExecutor"]

IMAGE_TYPES = ("image/png", "image/jpeg")


class InterpreterExecutor(RemotePythonExecutor):  # type: ignore[misc]
    """A ``RemotePythonExecutor`` whose code runs in one session of the server at ``base_url``
    (else ``$INTERPRETER_URL``) with ``api_key`` (else ``$INTERPRETER_API_KEY``). Give it to
    ``CodeAgent(executor=...)``. The session starts when the executor is first used (an
    agent's run first sends its tools, so the session has their requirements from the start)
    and is deleted by ``cleanup()``, which ``CodeAgent``'s ``with`` block calls on exit.

    ``packages`` are installed from PyPI when the session starts (the server builds its
    environment with uv); ``timeout_s`` is each execution's timeout (None: the server's
    default); ``limits``, ``idle_timeout_s``, ``max_lifetime_s`` and ``environment_variables``
    go to ``POST /sessions``. ``allow_pickle`` is smolagents' own: whether a final answer may
    come back pickled.

    A session's packages are fixed when it starts, so ``install_packages`` (called by
    ``send_tools`` for the tools' requirements) on a running session starts a new session with
    the union of the packages and deletes the old one: the variables and tools sent with
    ``send_variables`` / ``send_tools`` are sent again, but what the agent's own steps defined
    is gone. The same happens when the session ended on the server (idle too long, too old,
    its kernel killed for memory): the code runs in a new session and its logs begin with a
    note saying so.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        packages: Sequence[str] = (),
        logger: Any = None,
        allow_pickle: bool = False,
        timeout_s: float | None = None,
        limits: Mapping[str, float] | None = None,
        idle_timeout_s: float | None = None,
        max_lifetime_s: float | None = None,
        environment_variables: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(list(packages), logger or AgentLogger(level=LogLevel.INFO), allow_pickle)
        self.timeout_s = timeout_s
        options: dict[str, Any] = {
            "limits": dict(limits) if limits is not None else None,
            "idle_timeout_s": idle_timeout_s,
            "max_lifetime_s": max_lifetime_s,
            "environment_variables": (
                dict(environment_variables) if environment_variables is not None else None
            ),
        }
        self._session = HttpSession(base_url, api_key, options, self.additional_imports)
        self._setup: list[str] = []  # the cells of send_variables / send_tools, in order
        self._recording = False
        self.installed_packages = list(self.additional_imports)

    @property
    def session_id(self) -> str | None:
        """The id of the session the code runs in (None before its first use and after
        ``cleanup()``)."""
        return self._session.id

    @property
    def packages(self) -> list[str]:
        """The packages of the session (of the next one, before it starts)."""
        return list(self._session.packages)

    def run_code_raise_errors(self, code: str) -> Any:
        """Run ``code`` in the session: a ``CodeOutput`` with the cell's value (its
        ``execute_result``: an image as a ``PIL.Image``, JSON as its value, else its text), its
        stdout then stderr as ``logs``, and the answer when the code called ``final_answer``.
        Raises smolagents' ``AgentError`` when the code raised (its name, value and traceback in
        the message), ran past its timeout, or the server refused it."""
        try:
            result, note = self._session_run(code)
        except RequestFailed as exc:
            raise AgentError(str(exc), self.logger) from exc
        logs = _logs(result, note)
        error = result.get("error")
        if isinstance(error, dict) and error.get("name") == self.FINAL_ANSWER_EXCEPTION:
            try:
                answer = self._deserialize_final_answer(str(error["value"]), self.allow_pickle)
            except (ValueError, SerializationError) as exc:  # e.g. cut at the output cap
                raise AgentError(f"The final answer could not be read: {exc}", self.logger) from exc
            return CodeOutput(output=answer, logs=logs, is_final_answer=True)
        if result.get("status") != "completed":
            raise AgentError(_error_message(result, logs), self.logger)
        if self._recording and code not in self._setup:
            self._setup.append(code)
        return CodeOutput(output=_main_result(result), logs=logs, is_final_answer=False)

    def send_tools(self, tools: dict[str, Tool]) -> None:
        """Define ``tools`` in the session (``final_answer`` patched to be detected). Their
        requirements come first: smolagents' ``final_answer`` needs numpy and pillow, so the
        session an agent runs in has them."""
        self._recording = True
        try:
            super().send_tools(tools)
        finally:
            self._recording = False

    def send_variables(self, variables: dict[str, Any]) -> None:
        """Define ``variables`` in the session (sent serialized, as smolagents does)."""
        self._recording = True
        try:
            super().send_variables(variables)
        finally:
            self._recording = False

    def install_packages(self, additional_imports: list[str]) -> list[str]:
        """Add ``additional_imports`` to the session's packages. A session's packages are fixed
        when it starts: a running session is replaced by a new one with the union of the
        packages, which is sent the variables and tools sent so far (what the agent's steps
        defined is gone), and deleted; nothing happens when every package is there already."""
        missing = sorted({n for n in additional_imports if n not in self._session.packages})
        if missing:
            self._session.packages += missing
            if self._session.id is not None:
                self._renew()
        return additional_imports

    def cleanup(self) -> None:
        """Delete the session and close the HTTP client (idempotent). A server that cannot be
        reached is logged, not raised (as smolagents' E2B executor does): the server ends the
        session after its idle timeout."""
        try:
            self._session.close()
        except RequestFailed as exc:
            self.logger.log_error(f"The session could not be deleted: {exc}")

    def delete(self) -> None:
        """``cleanup()``, as smolagents' Docker executor names it."""
        self.cleanup()

    def _session_run(self, code: str) -> tuple[dict[str, Any], str | None]:
        if self._session.id is None:
            self._renew()
        try:
            return self._session.run(code, self.timeout_s), None
        except SessionGone as gone:
            self._renew()
            note = f"Note: {gone.reason}; this code ran in a new session, without the "
            note += "variables of earlier steps."
            return self._session.run(code, self.timeout_s), note

    def _renew(self) -> None:
        """Start a session (a new one, when one runs), with the variables and tools sent."""
        old = self._session.id
        packages = ", ".join(self._session.packages) or "no packages"
        self.logger.log(f"Starting a session ({packages})...", level=LogLevel.INFO)
        self._session.start()
        self._session.delete(old)
        for cell in self._setup:
            result = self._session.run(cell, self.timeout_s)
            if result.get("status") != "completed":
                raise AgentError(_error_message(result, _logs(result, None)), self.logger)


def _logs(result: Mapping[str, Any], note: str | None) -> str:
    """The note (if any), then what the cell printed: stdout, then stderr."""
    logs = f"{note}\n" if note else ""
    for stream in ("stdout", "stderr"):
        text = str(result.get(stream) or "")
        if text and logs and not logs.endswith("\n"):
            logs += "\n"
        logs += text
    return logs


def _error_message(result: Mapping[str, Any], logs: str) -> str:
    parts = []
    if not (result.get("status") == "failed" and result.get("termination_reason") == "exit"):
        # a timeout, a cancel, the memory limit: the server's sentence first
        parts.append(str(result.get("error_message") or result.get("status")))
    error = result.get("error")
    if isinstance(error, dict):  # the exception (a timeout's is where the code was stopped)
        parts.append(f"{error.get('name')}\n{error.get('value')}\n{error.get('traceback')}")
    what = "\n".join(parts)
    return f"{logs}\nExecuting code yielded an error:\n{what}"


def _main_result(result: Mapping[str, Any]) -> Any:
    """The cell's ``execute_result``, as smolagents' E2B executor reads it: an image as a
    ``PIL.Image``, JSON as its value, else the text; None when the cell had no value."""
    for bundle in result.get("results") or []:
        if bundle.get("type") != "execute_result":
            continue
        data = bundle.get("data") or {}
        for mime in IMAGE_TYPES:
            if isinstance(data.get(mime), str):
                return PIL.Image.open(BytesIO(base64.b64decode(data[mime])))
        for mime in ("application/json", "text/plain"):
            if mime in data:
                return data[mime]
    return None
