"""The tools, whatever the transport: ``run_code``, ``read_file`` and ``list_files``; and
``create_session`` and ``close_session`` for a Python kernel that keeps its state between
``run_code`` calls that name it (their images come back as image content).

Each call gets an ``AsyncClient`` from ``connect`` (the transport decides which server and which
key) and goes through the SDK: the server's checks all apply, and its refusals (an unknown
language, another key's job, a file that is not there) come back as tool errors carrying the
server's one-sentence ``detail``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ContentBlock, ImageContent, TextContent
from pydantic import BaseModel, Field

from interpreter import __version__
from interpreter.client import (
    AsyncClient,
    AsyncJob,
    AsyncSession,
    CellResult,
    ClientError,
    Result,
)

Connect = Callable[[Context], AbstractAsyncContextManager[AsyncClient]]

READ_MAX_BYTES = 100_000  # read_file returns at most this much of a file
OUTPUT_MAX_CHARS = 50_000  # run_code returns at most this much of stdout, and of stderr
PROGRESS_EVERY_S = 1.0
PROGRESS_TAIL_CHARS = 300  # output so far, in a progress message
MAX_IMAGES = 8  # run_code in a session attaches at most this many images

INSTRUCTIONS = (
    "Runs code (python, shell, javascript) in a sandbox, one job per run_code call, and reads "
    "back the files a job left in its working directory (list_files, read_file). For Python "
    "work over several steps (data analysis, plots), create_session starts a kernel that keeps "
    "variables between run_code calls given its session_id; close_session ends it."
)

RUN_CODE = f"""Run code in a fresh sandboxed job and return once it has finished.

Returns the job's stdout and stderr (each cut to {OUTPUT_MAX_CHARS} characters, head and tail
kept), its exit code, its status (completed, failed, timeout, cancelled) and termination reason
(exit, timeout, memory_limit, cpu_limit, signal, ...), and the files its working directory holds
afterwards (path and size), with the job id: pass it to read_file to read one of them.
A job that fails or times out is a normal result (read stderr and termination_reason); a tool
error means the job could not be run (e.g. an unsupported language).
Each call starts from an empty directory: put input files in `files`. Nothing persists between
calls except through the files you pass in.
Python code can ask for PyPI packages in `packages` (e.g. ["numpy", "pandas>=2"]): they are
installed before the job starts (wheels only; `packages` reports the versions) and the job itself
has no network, so it cannot pip install. Packages that cannot be found or installed are a tool
error saying why.
With `session_id` (from create_session) the Python code runs instead in that session's kernel,
as a notebook cell: variables, imports and files of earlier calls in it are there. The result
then adds `value` (the text of the last expression's value), `outputs` (what the code displayed,
in order) and `error` (the exception it raised: name, value, traceback; status "failed"), and
each PNG image the code displayed (e.g. a matplotlib plot) comes back as image content. `files`
and `packages` do not apply to a session (give packages to create_session)."""

CREATE_SESSION = """Start a session: a sandboxed Python kernel that keeps its variables, imports
and files between run_code calls that pass its session_id. Use it for work in several steps
(load data once, then explore it; plot with matplotlib and see the images).
`packages`: PyPI packages the session imports (e.g. ["pandas", "matplotlib"]); installing a set
the first time takes a while (up to a minute). The kernel has no network, so it cannot pip
install. The session ends with close_session, or by itself after `idle_timeout_s` unused or at
`expires_at`; then run_code with its id is a tool error."""

CLOSE_SESSION = """End a session that create_session started: its kernel is stopped and its
variables and files are gone."""

READ_FILE = f"""Read one file that a finished job left in its working directory.

`path` is relative to the job's directory, as list_files or run_code report it. UTF-8 content
comes back as text (encoding "utf-8"), anything else base64-encoded (encoding "base64"). At most
{READ_MAX_BYTES} bytes are returned: `truncated` is true when the file is longer (`size` is the
whole file's size)."""

LIST_FILES = """List the files a finished job left in its working directory: each file's path
(relative to the directory, for read_file) and size in bytes."""


class CellError(BaseModel):
    name: str = Field(description="the exception's class, e.g. ZeroDivisionError")
    value: str = Field(description="its message")
    traceback: str


class FileEntry(BaseModel):
    path: str = Field(description="relative to the job's working directory")
    size: int = Field(description="bytes")


class RunResult(BaseModel):
    job_id: str = Field(description="pass it to read_file or list_files")
    status: str = Field(description="completed, failed, timeout or cancelled")
    exit_code: int | None
    termination_reason: str | None = Field(
        description="exit, timeout, cpu_limit, memory_limit, workspace_limit, signal, "
        "cancelled, sandbox_error or packages_error (its packages could not be installed)"
    )
    stdout: str
    stderr: str
    error_message: str | None = Field(description="why the job failed, in one line")
    execution_time_ms: int | None
    files: list[FileEntry] = Field(description="what the job's directory holds after the run")
    packages: dict[str, str] | None = Field(
        default=None, description="the Python packages installed for the job: name -> version"
    )
    note: str | None = Field(default=None, description="set when stdout or stderr was cut")
    session_id: str | None = Field(
        default=None, description="the session the code ran in (run_code with session_id)"
    )
    value: str | None = Field(
        default=None, description="in a session: the text of the last expression's value"
    )
    outputs: list[str] | None = Field(
        default=None,
        description="in a session: what the code displayed, in order (an image as "
        "'[image N]', attached as image content)",
    )
    error: CellError | None = Field(
        default=None, description="in a session: the exception the code raised"
    )


class SessionInfo(BaseModel):
    session_id: str = Field(description="pass it to run_code and close_session")
    status: str = Field(description="idle, busy or dead")
    packages: dict[str, str] = Field(description="the requested packages: name -> version")
    idle_timeout_s: float = Field(description="the session ends after this many seconds unused")
    expires_at: str = Field(description="the session ends at this time in any case (UTC)")


class SessionClosed(BaseModel):
    session_id: str
    status: str = Field(description="terminated")


class FileList(BaseModel):
    job_id: str
    files: list[FileEntry]


class FileContent(BaseModel):
    job_id: str
    path: str
    size: int = Field(description="the whole file's size in bytes")
    encoding: Literal["utf-8", "base64"]
    content: str
    truncated: bool = Field(description=f"true when only the first {READ_MAX_BYTES} bytes came")


def build_server(connect: Connect) -> MCPServer[Any]:
    """The MCP server with its tools, each calling the API through ``connect``."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    server: MCPServer[Any] = MCPServer(
        "interpreter", instructions=INSTRUCTIONS, version=__version__
    )
    # MCPServer() calls logging.basicConfig: the host process configures its own logging.
    root.handlers[:] = handlers
    root.setLevel(level)

    @server.tool(description=RUN_CODE)
    async def run_code(
        code: Annotated[str, Field(description="the program's source")],
        ctx: Context,
        language: Annotated[
            str, Field(description="python, shell (bash) or javascript (node)")
        ] = "python",
        timeout: Annotated[
            float | None,
            Field(description="seconds before the job is killed (the server's default if unset)"),
        ] = None,
        files: Annotated[
            dict[str, str] | None,
            Field(description="input files to write first: relative path -> text content"),
        ] = None,
        packages: Annotated[
            list[str] | None,
            Field(
                description="python only: PyPI packages to install before the job runs, as "
                'requirements (e.g. ["numpy", "pandas>=2"]); wheels only, no network in the job'
            ),
        ] = None,
        session_id: Annotated[
            str | None,
            Field(description="run in this session's Python kernel (create_session's id)"),
        ] = None,
    ) -> Annotated[CallToolResult, RunResult]:
        if session_id is not None:
            if language != "python":
                raise ToolError(f"sessions run python only, not {language}")
            if files or packages:
                raise ToolError(
                    "files and packages do not apply to a session: give packages to "
                    "create_session, and write files from the code"
                )
            async with connect(ctx) as client:
                try:
                    job = await AsyncSession(client, session_id).submit(code, timeout=timeout)
                    result = await finish(job, ctx)
                except ClientError as exc:
                    raise ToolError(exc.detail) from None
            return cell_result(session_id, CellResult.from_dict(result.raw))
        async with connect(ctx) as client:
            try:
                job = await client.submit(
                    code, language=language, timeout=timeout, files=files, packages=packages
                )
                result = await finish(job, ctx)
                listing = await job.files()
            except ClientError as exc:
                raise ToolError(exc.detail) from None
        return tool_result(
            run_result(result, [FileEntry(path=f.path, size=f.size) for f in listing])
        )

    @server.tool(description=READ_FILE)
    async def read_file(
        job_id: Annotated[str, Field(description="the job id run_code returned")],
        path: Annotated[str, Field(description="relative to the job's working directory")],
        ctx: Context,
    ) -> FileContent:
        async with connect(ctx) as client:
            try:
                data, size = await client.job(job_id).download_head(path, READ_MAX_BYTES)
            except ClientError as exc:
                raise ToolError(exc.detail) from None
        truncated = size > len(data)
        encoding, content = encode(data, truncated)
        return FileContent(
            job_id=job_id,
            path=path,
            size=size,
            encoding=encoding,
            content=content,
            truncated=truncated,
        )

    @server.tool(description=LIST_FILES)
    async def list_files(
        job_id: Annotated[str, Field(description="the job id run_code returned")],
        ctx: Context,
    ) -> FileList:
        async with connect(ctx) as client:
            try:
                listing = await client.job(job_id).files()
            except ClientError as exc:
                raise ToolError(exc.detail) from None
        return FileList(job_id=job_id, files=[FileEntry(path=f.path, size=f.size) for f in listing])

    @server.tool(description=CREATE_SESSION)
    async def create_session(
        ctx: Context,
        packages: Annotated[
            list[str] | None,
            Field(description='PyPI packages to install in it, e.g. ["pandas", "matplotlib"]'),
        ] = None,
    ) -> SessionInfo:
        async with connect(ctx) as client:
            try:
                session = await client.session(packages=packages or ())
                info = await session.info()
            except ClientError as exc:
                raise ToolError(exc.detail) from None
        environment = info.get("environment") or {}
        return SessionInfo(
            session_id=session.id,
            status=str(info["status"]),
            packages=requested_versions(packages or [], environment.get("packages") or {}),
            idle_timeout_s=float(info["idle_timeout_s"]),
            expires_at=str(info["expires_at"]),
        )

    @server.tool(description=CLOSE_SESSION)
    async def close_session(
        session_id: Annotated[str, Field(description="the session create_session started")],
        ctx: Context,
    ) -> SessionClosed:
        async with connect(ctx) as client:
            try:
                ended = await AsyncSession(client, session_id).close()
            except ClientError as exc:
                raise ToolError(exc.detail) from None
        if not ended:
            raise ToolError(f"Session not found: {session_id} (it ended already)")
        return SessionClosed(session_id=session_id, status="terminated")

    return server


# -- run_code ------------------------------------------------------------------------------------


def progress_requested(ctx: Context) -> bool:
    meta = ctx.request_context.meta
    return meta is not None and meta.get("progress_token") is not None


@dataclass
class Watch:
    """What a running job showed so far: its last status and the tail of its output."""

    started: float
    status: str = "pending"
    tail: str = ""

    def add(self, text: str) -> None:
        self.tail = (self.tail + text)[-PROGRESS_TAIL_CHARS:]

    def message(self) -> str:
        elapsed = time.monotonic() - self.started
        said = f"{self.status}, {elapsed:.1f} s"
        return f"{said}; output so far: {self.tail}" if self.tail else said


async def finish(job: AsyncJob, ctx: Context) -> Result:
    """The job's result once final; meanwhile progress notifications (when the client asked
    for them) with the elapsed time and the output so far. A call cancelled by the client
    cancels the job."""
    watch = Watch(started=time.monotonic())

    async def follow_output() -> None:
        with contextlib.suppress(ClientError):  # progress is best effort; the result is not
            async for event in job.stream():
                if event.event == "status":
                    watch.status = str(event.data.get("status"))
                elif event.event in ("stdout", "stderr"):
                    watch.add(event.text)

    async def report() -> None:
        while True:
            await anyio.sleep(PROGRESS_EVERY_S)
            elapsed = round(time.monotonic() - watch.started, 1)
            await ctx.report_progress(elapsed, None, watch.message())

    try:
        if not progress_requested(ctx):
            return await job.wait()
        async with anyio.create_task_group() as group:
            group.start_soon(follow_output)
            group.start_soon(report)
            try:
                result = await job.wait()
            finally:
                group.cancel_scope.cancel()
        return result
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True), contextlib.suppress(ClientError):
            await job.cancel()
        raise


def cut(text: str, limit: int) -> tuple[str, int]:
    """``text`` within ``limit`` characters, its head and tail kept; and how many were cut."""
    if len(text) <= limit:
        return text, 0
    half = limit // 2
    dropped = len(text) - 2 * half
    return f"{text[:half]}\n[... {dropped} characters cut ...]\n{text[-half:]}", dropped


def run_result(result: Result, files: list[FileEntry]) -> RunResult:
    stdout, stdout_cut = cut(result.stdout, OUTPUT_MAX_CHARS)
    stderr, stderr_cut = cut(result.stderr, OUTPUT_MAX_CHARS)
    notes = [
        f"{name}: {dropped} characters cut in the middle"
        for name, dropped in (("stdout", stdout_cut), ("stderr", stderr_cut))
        if dropped
    ]
    return RunResult(
        job_id=result.job_id,
        status=result.status,
        exit_code=result.exit_code,
        termination_reason=result.termination_reason,
        stdout=stdout,
        stderr=stderr,
        error_message=result.error_message,
        execution_time_ms=result.execution_time_ms,
        files=files,
        packages=result.environment.packages if result.environment is not None else None,
        note="; ".join(notes) or None,
    )


# -- read_file -----------------------------------------------------------------------------------


def encode(data: bytes, truncated: bool) -> tuple[Literal["utf-8", "base64"], str]:
    """UTF-8 text as is, else base64; a character cut by the truncation is dropped."""
    try:
        return "utf-8", data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if truncated and exc.reason == "unexpected end of data":
            with contextlib.suppress(UnicodeDecodeError):
                return "utf-8", data[: exc.start].decode("utf-8")
        return "base64", base64.b64encode(data).decode("ascii")


# -- sessions ------------------------------------------------------------------------------------


def cell_result(session_id: str, cell: CellResult) -> CallToolResult:
    """A session's cell as ``run_code`` answers it: the ``RunResult`` (its text, and as
    structured content), then each PNG image the cell displayed as image content."""
    stdout, stdout_cut = cut(cell.stdout, OUTPUT_MAX_CHARS)
    stderr, stderr_cut = cut(cell.stderr, OUTPUT_MAX_CHARS)
    notes = [
        f"{name}: {dropped} characters cut in the middle"
        for name, dropped in (("stdout", stdout_cut), ("stderr", stderr_cut))
        if dropped
    ]
    outputs: list[str] = []
    images: list[ContentBlock] = []
    value = None
    for bundle in cell.results:
        data = bundle.get("data")
        if not isinstance(data, dict):
            continue
        png = data.get("image/png")
        text = data.get("text/plain")
        if isinstance(png, str):
            try:
                encoded = base64.b64encode(base64.b64decode(png)).decode("ascii")
            except (binascii.Error, ValueError):
                outputs.append("[an image that is not valid base64]")
            else:
                if len(images) < MAX_IMAGES:
                    images.append(ImageContent(type="image", data=encoded, mime_type="image/png"))
                    outputs.append(f"[image {len(images)}]")
                else:
                    outputs.append("[image not attached]")
                    notes.append(f"only the first {MAX_IMAGES} images are attached")
        elif bundle.get("type") == "execute_result" and isinstance(text, str):
            value = cut(text, OUTPUT_MAX_CHARS)[0]
        elif isinstance(text, str):
            outputs.append(cut(text, OUTPUT_MAX_CHARS)[0])
        if bundle.get("truncated"):
            notes.append("an output was cut by the server")
    error = None
    if cell.error is not None:
        error = CellError(
            name=str(cell.error.get("name")),
            value=str(cell.error.get("value")),
            traceback=cut(str(cell.error.get("traceback") or ""), OUTPUT_MAX_CHARS)[0],
        )
    result = RunResult(
        job_id=cell.job_id,
        status=cell.status,
        exit_code=None,
        termination_reason=cell.termination_reason,
        stdout=stdout,
        stderr=stderr,
        error_message=cell.error_message,
        execution_time_ms=cell.raw.get("execution_time_ms"),
        files=[],
        note="; ".join(dict.fromkeys(notes)) or None,
        session_id=session_id,
        value=value,
        outputs=outputs,
        error=error,
    )
    return tool_result(result, images)


def tool_result(result: RunResult, images: list[ContentBlock] | None = None) -> CallToolResult:
    """``run_code``'s answer: the result as JSON text (what the model reads) and as structured
    content, then the images."""
    text = TextContent(type="text", text=result.model_dump_json(indent=2))
    return CallToolResult(
        content=[text, *(images or [])], structured_content=result.model_dump(mode="json")
    )


def _name(requirement: str) -> str:
    """A requirement's project name, normalized (``Pandas>=2`` -> ``pandas``)."""
    name = re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def requested_versions(requested: list[str], installed: dict[str, str]) -> dict[str, str]:
    """The installed versions of the packages asked for (not of everything they pulled in)."""
    versions = {_name(name): version for name, version in installed.items()}
    wanted = (_name(requirement) for requirement in requested)
    return {name: versions[name] for name in wanted if name in versions}
