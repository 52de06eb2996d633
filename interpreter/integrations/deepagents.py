"""A LangChain Deep Agents sandbox backend on the server (``pip install
'interpreter-server[deepagents]'``)::

    from deepagents import create_deep_agent
    from interpreter.integrations.deepagents import InterpreterSandbox

    sandbox = InterpreterSandbox("http://127.0.0.1:8000", api_key="...")
    agent = create_deep_agent(model=..., backend=sandbox)

Each ``execute`` is a ``shell`` job in one named working directory, the sandbox's id, so what
one command writes the next reads, and so do ``upload_files`` / ``download_files`` and the file
tools ``BaseSandbox`` builds on ``execute`` (``ls``, ``read``, ``write``, ``edit``, ``grep``,
``glob``). Commands run with that directory as their current directory; file paths are taken in
it: an absolute path must lie inside it (``workdir``, as the commands see it), a relative one is
relative to it.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import TracebackType
from typing import TypedDict

from deepagents.backends.protocol import (
    ExecuteResponse,
    FileDownloadResponse,
    FileOperationError,
    FileUploadResponse,
)
from deepagents.backends.sandbox import BaseSandbox

from interpreter.client import AsyncClient, Client, InvalidRequest, JobNotFound, Result
from interpreter.integrations._shell import (
    async_client,
    exit_code,
    new_directory_name,
    server_note,
    truncated,
)

__all__ = ["InterpreterSandbox"]

MAX_FILES_PER_JOB = 100  # the server's default INTERPRETER_MAX_INPUT_FILES
MERGE_STDERR = "exec 2>&1\n"  # one stream, in the order the command wrote it
NO_OP = ":"


class _JobOptions(TypedDict):
    language: str
    working_directory: str
    timeout: float | None
    environment: Mapping[str, str] | None


@dataclass(frozen=True)
class _Target:
    """A caller's path taken in the working directory: a relative ``path``, or the ``error``
    that it cannot be one."""

    path: str | None = None
    error: FileOperationError | None = None


class InterpreterSandbox(BaseSandbox):
    """A Deep Agents sandbox whose commands run as jobs of the server at ``base_url`` (else
    ``$INTERPRETER_URL``) with ``api_key`` (else ``$INTERPRETER_API_KEY``), or through the
    ``client`` / ``async_client`` given (the sync methods use the one, ``aexecute``,
    ``aupload_files`` and ``adownload_files`` the other; without one, each async call opens its
    own).

    ``sandbox_id`` names the working directory (a fresh ``sandbox-<hex>`` by default): a later
    ``InterpreterSandbox`` with the same id and API key finds the files again. ``timeout_s`` is
    each command's timeout when ``execute`` gives none (None: the server's default);
    ``environment`` the variables every command gets.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        client: Client | None = None,
        async_client: AsyncClient | None = None,
        sandbox_id: str | None = None,
        timeout_s: float | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._given_client = client
        self._own_client: Client | None = None
        self._async_client = async_client
        self._id = sandbox_id or new_directory_name("sandbox")
        self._timeout_s = timeout_s
        self._environment = dict(environment) if environment is not None else None
        self._workdir: str | None = None

    @property
    def id(self) -> str:
        """The sandbox's id: the name of its working directory on the server."""
        return self._id

    # -- commands --------------------------------------------------------------------------------
    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        """Run ``command`` (a shell command line) in the sandbox's directory: its stdout and
        stderr as one output, its exit code (124 on timeout) and whether the server cut it."""
        timeout_s = self._command_timeout(timeout)
        try:
            result = self._client().run(
                MERGE_STDERR + command, **self._job(timeout_s, self._environment)
            )
        except InvalidRequest as exc:  # e.g. a timeout over the server's maximum
            return ExecuteResponse(output=f"Error: {exc.detail}", exit_code=1)
        return _execute_response(result, timeout_s)

    async def aexecute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        """``execute`` with the async client."""
        timeout_s = self._command_timeout(timeout)
        async with self._aclient() as client:
            try:
                result = await client.run(
                    MERGE_STDERR + command, **self._job(timeout_s, self._environment)
                )
            except InvalidRequest as exc:
                return ExecuteResponse(output=f"Error: {exc.detail}", exit_code=1)
        return _execute_response(result, timeout_s)

    # -- files -----------------------------------------------------------------------------------
    @property
    def workdir(self) -> str:
        """The sandbox's working directory as its commands see it (found by running ``pwd``
        once): where absolute paths of ``upload_files`` / ``download_files`` must lie."""
        if self._workdir is None:
            self._workdir = _workdir_of(self._client().run("pwd", **self._job()))
        return self._workdir

    async def aworkdir(self) -> str:
        """``workdir`` with the async client."""
        if self._workdir is None:
            async with self._aclient() as client:
                self._workdir = _workdir_of(await client.run("pwd", **self._job()))
        return self._workdir

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        """Write each ``(path, content)`` into the sandbox (parents made, a file there replaced):
        one job per hundred files, carrying them as its input files. Errors per file:
        ``invalid_path`` (empty, ``..``, NUL), ``permission_denied`` (outside the working
        directory, or through a symbolic link), ``is_directory``, or the server's reason."""
        root = self.workdir if _any_absolute(path for path, _ in files) else None
        upload = _Upload(files, root)
        for batch in upload.batches():
            error = self._put(batch)
            if error is not None and len(batch) > 1:  # find which file: one job each
                for path, content in batch.items():
                    upload.record([path], self._put({path: content}))
            else:
                upload.record(batch, error)
        return upload.responses()

    async def aupload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        """``upload_files`` with the async client."""
        root = await self.aworkdir() if _any_absolute(path for path, _ in files) else None
        upload = _Upload(files, root)
        async with self._aclient() as client:
            for batch in upload.batches():
                error = await self._aput(client, batch)
                if error is not None and len(batch) > 1:
                    for path, content in batch.items():
                        upload.record([path], await self._aput(client, {path: content}))
                else:
                    upload.record(batch, error)
        return upload.responses()

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        """Read each path of the sandbox: one job tells what each path is, then the files are
        read over the job's files route. Errors per path: ``file_not_found``,
        ``is_directory``, ``invalid_path``, ``permission_denied`` (outside the working
        directory, a symbolic link or a special file)."""
        root = self.workdir if _any_absolute(paths) else None
        download = _Download(paths, root)
        if download.wanted:
            client = self._client()
            probe = client.run(download.probe_script(), **self._job())
            job = client.job(probe.job_id)
            for path in download.read_probe(probe):
                try:
                    download.record(path, job.download(path))
                except JobNotFound:
                    download.record(path, None)
        return download.responses()

    async def adownload_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        """``download_files`` with the async client."""
        root = await self.aworkdir() if _any_absolute(paths) else None
        download = _Download(paths, root)
        if download.wanted:
            async with self._aclient() as client:
                probe = await client.run(download.probe_script(), **self._job())
                job = client.job(probe.job_id)
                for path in download.read_probe(probe):
                    try:
                        download.record(path, await job.download(path))
                    except JobNotFound:
                        download.record(path, None)
        return download.responses()

    # -- plumbing --------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the client this sandbox opened (the files stay on the server)."""
        if self._own_client is not None:
            self._own_client.close()
            self._own_client = None

    def __enter__(self) -> InterpreterSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _client(self) -> Client:
        if self._given_client is not None:
            return self._given_client
        if self._own_client is None:
            self._own_client = Client(self._base_url, self._api_key)
        return self._own_client

    def _aclient(self) -> AbstractAsyncContextManager[AsyncClient]:
        return async_client(self._async_client, self._base_url, self._api_key)

    def _command_timeout(self, timeout: int | None) -> float | None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be non-negative, got {timeout}")
        return timeout if timeout else self._timeout_s  # 0: the default, as for None

    def _job(
        self, timeout_s: float | None = None, environment: Mapping[str, str] | None = None
    ) -> _JobOptions:
        return {
            "language": "shell",
            "working_directory": self._id,
            "timeout": timeout_s,
            "environment": environment,
        }

    def _put(self, files: Mapping[str, bytes]) -> str | None:
        try:
            return _upload_error(self._client().run(NO_OP, files=dict(files), **self._job()))
        except InvalidRequest as exc:  # a refused input file (too large, a name too long, ...)
            return exc.detail

    async def _aput(self, client: AsyncClient, files: Mapping[str, bytes]) -> str | None:
        try:
            return _upload_error(await client.run(NO_OP, files=dict(files), **self._job()))
        except InvalidRequest as exc:
            return exc.detail


def _execute_response(result: Result, timeout_s: float | None) -> ExecuteResponse:
    output = result.stdout
    if result.stderr:  # only what the shell wrote before `exec 2>&1`, if anything
        output = f"{output}\n{result.stderr}" if output else result.stderr
    code = exit_code(result)
    note = server_note(result)
    if result.timed_out and timeout_s is not None:
        note = f"Command timed out after {timeout_s:g} seconds"
    if note is not None:
        output = f"{output.rstrip()}\n\nError: {note}" if output else f"Error: {note}"
    return ExecuteResponse(output=output, exit_code=code, truncated=truncated(result))


def _workdir_of(result: Result) -> str:
    workdir = result.stdout.strip()
    if not result.ok or not workdir.startswith("/"):
        reason = server_note(result) or result.stderr
        raise RuntimeError(f"could not find the sandbox's working directory: {reason}")
    return workdir


def _any_absolute(paths: Iterable[str]) -> bool:
    return any(path.startswith("/") for path in paths)


def _target(path: str, root: str | None) -> _Target:
    """``path`` relative to the working directory, or why it cannot be one."""
    if not path or "\x00" in path:
        return _Target(error="invalid_path")
    pure = PurePosixPath(path)
    if ".." in pure.parts:
        return _Target(error="invalid_path")
    if pure.is_absolute():
        if root is None:
            raise AssertionError("an absolute path needs the working directory")
        try:
            pure = pure.relative_to(root)
        except ValueError:  # the rest of the sandbox's filesystem is read-only
            return _Target(error="permission_denied")
    parts = [part for part in pure.parts if part not in ("", ".")]
    return _Target(path="/".join(parts)) if parts else _Target(error="is_directory")


def _upload_error(result: Result) -> str | None:
    if result.status == "completed":
        return None
    message = result.error_message or result.status
    if "Is a directory" in message:
        return "is_directory"
    if "symlink" in message:
        return "permission_denied"
    return message


class _Upload:
    """The files of one ``upload_files`` call, by relative path, and their errors."""

    def __init__(self, files: Sequence[tuple[str, bytes]], root: str | None) -> None:
        self._files = files
        self._targets = [_target(path, root) for path, _ in files]
        self._errors: dict[str, str | None] = {}

    def batches(self) -> list[dict[str, bytes]]:
        latest: dict[str, bytes] = {}  # a path given twice: the last content wins
        for target, (_, content) in zip(self._targets, self._files, strict=True):
            if target.path is not None:
                latest[target.path] = content
        items = list(latest.items())
        return [
            dict(items[start : start + MAX_FILES_PER_JOB])
            for start in range(0, len(items), MAX_FILES_PER_JOB)
        ]

    def record(self, paths: Iterable[str], error: str | None) -> None:
        for path in paths:
            self._errors[path] = error

    def responses(self) -> list[FileUploadResponse]:
        return [
            FileUploadResponse(
                path=path,
                error=target.error if target.path is None else self._errors.get(target.path),
            )
            for target, (path, _) in zip(self._targets, self._files, strict=True)
        ]


class _Download:
    """The paths of one ``download_files`` call: what each is, then their contents."""

    def __init__(self, paths: Sequence[str], root: str | None) -> None:
        self._paths = paths
        self._targets = [_target(path, root) for path in paths]
        self.wanted = sorted({t.path for t in self._targets if t.path is not None})
        self._outcomes: dict[str, bytes | FileOperationError] = {}

    def probe_script(self) -> str:
        """A shell script printing one letter per wanted path: f (a regular file), d, l (a
        symbolic link), o (anything else), - (nothing there)."""
        quoted = " ".join(shlex.quote(path) for path in self.wanted)
        return (
            f"for p in {quoted}; do "
            'if [ -L "$p" ]; then echo l; elif [ -d "$p" ]; then echo d; '
            'elif [ -f "$p" ]; then echo f; elif [ -e "$p" ]; then echo o; else echo -; fi; '
            "done"
        )

    def read_probe(self, probe: Result) -> list[str]:
        """Record what the probe found; answer the regular files to read."""
        kinds = probe.stdout.split()
        if not probe.ok or len(kinds) != len(self.wanted):
            raise RuntimeError(f"could not look at the sandbox's files: {server_note(probe)}")
        files = []
        for path, kind in zip(self.wanted, kinds, strict=True):
            if kind == "f":
                files.append(path)
            else:
                self._outcomes[path] = _PROBE_ERRORS.get(kind, "file_not_found")
        return files

    def record(self, path: str, content: bytes | None) -> None:
        self._outcomes[path] = content if content is not None else "file_not_found"

    def responses(self) -> list[FileDownloadResponse]:
        responses = []
        for path, target in zip(self._paths, self._targets, strict=True):
            outcome = self._outcomes[target.path] if target.path is not None else target.error
            if isinstance(outcome, bytes):
                responses.append(FileDownloadResponse(path=path, content=outcome))
            else:
                responses.append(FileDownloadResponse(path=path, error=outcome))
        return responses


_PROBE_ERRORS: dict[str, FileOperationError] = {
    "d": "is_directory",
    "l": "permission_denied",  # the files routes never follow a link
    "o": "permission_denied",  # a fifo, socket or device: never opened
    "-": "file_not_found",
}
