"""The MCP server with the official ``mcp`` client, against a live server: over stdio (``python -m
interpreter.mcp --server URL`` spawned) and over streamable HTTP (the server's own ``/mcp``)."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, TextContent

from interpreter.client import AsyncClient
from tests.acceptance.server import ServerProcess
from tests.client.conftest import KEY, OTHER_KEY

TOOLS = {"run_code", "read_file", "list_files", "create_session", "close_session"}


@contextlib.asynccontextmanager
async def stdio_client(server: ServerProcess, key: str = KEY) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "interpreter.mcp", "--server", server.url, "--api-key", key],
    )
    async with Client(params) as client:
        yield client


@contextlib.asynccontextmanager
async def http_client(
    server: ServerProcess, key: str | None = KEY, *, bearer: bool = False
) -> AsyncIterator[Client]:
    headers = None
    if key is not None:
        headers = {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client:
            yield client


@pytest.fixture(params=["stdio", "http"])
def connect(
    request: pytest.FixtureRequest, server: ServerProcess
) -> Callable[[], AbstractAsyncContextManager[Client]]:
    """A client of the server's tools over stdio, then over HTTP (entered in the test: the mcp
    client's task groups must end in the task that started them)."""
    make = stdio_client if request.param == "stdio" else http_client
    return lambda: make(server)


def text_of(result: CallToolResult) -> str:
    return "".join(part.text for part in result.content if isinstance(part, TextContent))


def data_of(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    assert json.loads(text_of(result)) == result.structured_content  # the model reads the text
    return result.structured_content


async def test_tools_are_listed_with_descriptions(
    connect: Callable[[], AbstractAsyncContextManager[Client]],
) -> None:
    async with connect() as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
        assert set(tools) == TOOLS
        assert all(tool.description for tool in tools.values())
        assert set(tools["run_code"].input_schema["properties"]) == {
            "code",
            "language",
            "timeout",
            "files",
            "packages",
            "session_id",
        }
        assert tools["run_code"].input_schema["required"] == ["code"]
        assert set(tools["read_file"].input_schema["required"]) == {"job_id", "path"}


async def test_run_code_with_files_then_read_and_list(
    connect: Callable[[], AbstractAsyncContextManager[Client]],
) -> None:
    async with connect() as mcp:
        code = (
            "import sys\n"
            "text = open('data/in.txt').read()\n"
            "print(text.upper())\n"
            "print('to stderr', file=sys.stderr)\n"
            "open('out.txt', 'w').write(text * 2)\n"
            "open('blob.bin', 'wb').write(bytes(range(256)))\n"
        )
        run = data_of(
            await mcp.call_tool("run_code", {"code": code, "files": {"data/in.txt": "héllo"}})
        )
        assert run["status"] == "completed"
        assert (run["exit_code"], run["termination_reason"]) == (0, "exit")
        assert (run["stdout"], run["stderr"]) == ("HÉLLO\n", "to stderr\n")
        assert {(f["path"], f["size"]) for f in run["files"]} == {
            ("data/in.txt", 6),
            ("out.txt", 12),
            ("blob.bin", 256),
        }

        job_id = run["job_id"]
        out = data_of(await mcp.call_tool("read_file", {"job_id": job_id, "path": "out.txt"}))
        assert out == {
            "job_id": job_id,
            "path": "out.txt",
            "size": 12,
            "encoding": "utf-8",
            "content": "héllohéllo",
            "truncated": False,
        }
        blob = data_of(await mcp.call_tool("read_file", {"job_id": job_id, "path": "blob.bin"}))
        assert (blob["encoding"], blob["truncated"]) == ("base64", False)
        assert base64.b64decode(blob["content"]) == bytes(range(256))

        listing = data_of(await mcp.call_tool("list_files", {"job_id": job_id}))
        assert listing["job_id"] == job_id
        assert sorted(f["path"] for f in listing["files"]) == ["blob.bin", "data/in.txt", "out.txt"]


async def test_large_and_empty_files_are_read_within_the_cap(
    connect: Callable[[], AbstractAsyncContextManager[Client]],
) -> None:
    async with connect() as mcp:
        code = "open('big.txt', 'w').write('é' * 100_000)\nopen('empty', 'w').close()"
        job_id = data_of(await mcp.call_tool("run_code", {"code": code}))["job_id"]
        big = data_of(await mcp.call_tool("read_file", {"job_id": job_id, "path": "big.txt"}))
        assert (big["size"], big["truncated"], big["encoding"]) == (200_000, True, "utf-8")
        assert big["content"] == "é" * 50_000  # 100,000 bytes: whole characters only
        empty = data_of(await mcp.call_tool("read_file", {"job_id": job_id, "path": "empty"}))
        assert (empty["size"], empty["content"], empty["truncated"]) == (0, "", False)


async def test_a_failing_job_is_a_result_and_a_refusal_a_tool_error(
    connect: Callable[[], AbstractAsyncContextManager[Client]],
) -> None:
    async with connect() as mcp:
        failed = data_of(
            await mcp.call_tool("run_code", {"code": "echo oops >&2; exit 3", "language": "shell"})
        )
        assert (failed["status"], failed["exit_code"], failed["stderr"]) == ("failed", 3, "oops\n")
        timed_out = data_of(
            await mcp.call_tool("run_code", {"code": "import time; time.sleep(30)", "timeout": 1})
        )
        assert (timed_out["status"], timed_out["termination_reason"]) == ("timeout", "timeout")

        refused = await mcp.call_tool("run_code", {"code": "x", "language": "cobol"})
        assert refused.is_error
        assert "cobol" in text_of(refused) and "Traceback" not in text_of(refused)
        missing = await mcp.call_tool("list_files", {"job_id": "no-such-job"})
        assert missing.is_error and "not found" in text_of(missing).lower()
        no_file = await mcp.call_tool("read_file", {"job_id": failed["job_id"], "path": "../etc"})
        assert no_file.is_error and "Traceback" not in text_of(no_file)


async def test_a_long_job_reports_progress(
    connect: Callable[[], AbstractAsyncContextManager[Client]],
) -> None:
    async with connect() as mcp:
        updates: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            updates.append((progress, total, message))

        code = (
            "import time\nfor i in range(4):\n    print('step', i, flush=True)\n    time.sleep(0.5)"
        )
        run = data_of(
            await mcp.call_tool("run_code", {"code": code}, progress_callback=on_progress)
        )
        assert run["stdout"] == "".join(f"step {i}\n" for i in range(4))
        assert updates, "no progress notification for a job of 2 s"
        progress = [value for value, _, _ in updates]
        assert progress == sorted(progress) and progress[0] >= 0.9
        assert any("output so far: step" in (message or "") for _, _, message in updates)


async def test_http_needs_a_key_and_keeps_keys_apart(server: ServerProcess) -> None:
    async with httpx.AsyncClient() as raw:
        refused = await raw.post(
            f"{server.url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert refused.status_code == 401
    assert "API key" in refused.json()["detail"]
    with pytest.raises(Exception):  # noqa: B017 (the client's own error for an HTTP 401)
        async with http_client(server, key=None) as client:
            await client.list_tools()
    with pytest.raises(Exception):  # noqa: B017
        async with http_client(server, key="wrong") as client:
            await client.list_tools()

    async with (
        http_client(server, KEY) as mine,
        http_client(server, OTHER_KEY, bearer=True) as theirs,
    ):
        run = data_of(await mine.call_tool("run_code", {"code": "open('secret', 'w').write('s')"}))
        job_id = run["job_id"]
        for tool, args in (
            ("list_files", {"job_id": job_id}),
            ("read_file", {"job_id": job_id, "path": "secret"}),
        ):
            result = await theirs.call_tool(tool, args)
            assert result.is_error and "not found" in text_of(result).lower()
        read = data_of(await mine.call_tool("read_file", {"job_id": job_id, "path": "secret"}))
        assert read["content"] == "s"


async def test_a_job_run_over_mcp_is_the_keys_job(server: ServerProcess) -> None:
    """The tools act as the caller's key: the job is that key's, seen through the API."""
    async with stdio_client(server) as client:
        run = data_of(await client.call_tool("run_code", {"code": "print(1)"}))
    async with httpx.AsyncClient() as raw:
        mine = await raw.get(
            f"{server.url}/jobs/{run['job_id']}/status", headers={"X-API-Key": KEY}
        )
        theirs = await raw.get(
            f"{server.url}/jobs/{run['job_id']}/status", headers={"X-API-Key": OTHER_KEY}
        )
    assert (mine.status_code, theirs.status_code) == (200, 404)


async def test_a_cancelled_call_cancels_its_job(
    connect: Callable[[], AbstractAsyncContextManager[Client]], aclient: AsyncClient
) -> None:
    async with connect() as mcp:
        async with anyio.create_task_group() as group:
            group.start_soon(mcp.call_tool, "run_code", {"code": "import time; time.sleep(60)"})
            with anyio.fail_after(15):
                while not (running := await aclient.jobs(status="running")):
                    await anyio.sleep(0.1)
            group.cancel_scope.cancel()
    job = aclient.job(running[0]["job_id"])
    assert (await job.wait(timeout=15)).status == "cancelled"


def test_the_client_needs_no_mcp_and_the_server_starts_without_it(tmp_path: Path) -> None:
    """``mcp`` blocked from import: the client imports, and the app serves without ``/mcp``."""
    script = f"""
import logging, sys
sys.modules["mcp"] = None
import interpreter.client
from interpreter.api.app import create_app
from interpreter.config import Settings
logging.basicConfig(level=logging.WARNING, format="%(message)s")
app = create_app(Settings(data_dir={str(tmp_path)!r}, sandbox="none"))
print(sorted(app.openapi()["paths"]), [getattr(route, "path", "") for route in app.routes])
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "'/execute'" in done.stdout and "/mcp" not in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "mcp" in line.lower()]
    assert warnings == [
        "MCP endpoint /mcp disabled: the mcp package is not installed "
        "(pip install 'interpreter-server[server]')"
    ]


async def test_the_interpreter_command_serves_the_tools_over_stdio(server: ServerProcess) -> None:
    command = Path(sys.executable).with_name("interpreter")  # the console script beside python
    params = StdioServerParameters(
        command=str(command), args=["mcp", "--server", server.url, "--api-key", KEY]
    )
    async with Client(params) as client:
        listed = await client.list_tools()
        result = await client.call_tool("run_code", {"code": "print(6 * 7)"})

    assert {tool.name for tool in listed.tools} == TOOLS
    assert data_of(result)["stdout"] == "42\n"
