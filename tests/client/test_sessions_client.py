"""Sessions through the clients, against a real server: the SDK (``Client.session``,
``AsyncClient.session``), the ``interpreter session`` commands and the MCP tools, as their users
see them. The module's server builds two package environments the first time they are asked
for (ipykernel alone, then with matplotlib); later sessions start in under a second."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest
from mcp import Client as McpClient
from mcp_types import ImageContent

from interpreter.client import (
    AsyncClient,
    AsyncSession,
    CellResult,
    Client,
    JobNotFound,
    Session,
)
from tests.acceptance.server import ServerProcess
from tests.client.conftest import OTHER_KEY
from tests.client.test_cli import cli, one_line
from tests.client.test_mcp import data_of, http_client, stdio_client, text_of
from tests.sandbox.usable import UNUSABLE

pytestmark = [
    pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox: {UNUSABLE}"),
    pytest.mark.timeout(180),  # the first session of each kind installs its packages
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()\n"


@pytest.fixture
def sessions(client: Client) -> Iterator[list[Session]]:
    """Sessions a test opens without a ``with``: deleted at teardown whatever happened."""
    opened: list[Session] = []
    yield opened
    for session in opened:
        session.close()


def listed(client: Client) -> set[str]:
    return {info["session_id"] for info in client.sessions()}


# -- the SDK -------------------------------------------------------------------------------------


def test_a_session_keeps_its_variables_and_is_deleted_on_exit(
    server: ServerProcess, client: Client
) -> None:
    with client.session(idle_timeout_s=120) as session:
        assert session.id in listed(client)
        first = session.run("x = 41\nprint('set')")
        assert isinstance(first, CellResult)
        assert (first.ok, first.status, first.stdout, first.text) == (
            True,
            "completed",
            "set\n",
            None,
        )
        second = session.run("x + 1")
        assert (second.ok, second.text, second.results[0]["type"]) == (True, "42", "execute_result")
        assert second.job_id != first.job_id
        assert client.job(second.job_id).status() == "completed"  # each cell is a job
        info = session.info()
        assert (info["session_id"], info["status"], info["executions"]) == (session.id, "idle", 2)
        assert info["idle_timeout_s"] == 120
        with Client(server.url, api_key=OTHER_KEY, transport=httpx.HTTPTransport()) as other:
            with pytest.raises(JobNotFound):
                Session(other, session.id).run("x")
            assert session.id not in {s["session_id"] for s in other.sessions()}

    assert session.closed and session.id not in listed(client)
    with pytest.raises(JobNotFound) as gone:
        session.info()
    assert "Session not found" in gone.value.detail
    assert session.close() is False  # closing again is nothing
    assert Session(client, session.id).close() is False


def test_an_exception_a_timeout_and_a_restart(client: Client, sessions: list[Session]) -> None:
    session = client.session()
    sessions.append(session)
    session.run("x = 7")
    failed = session.run("print('before')\n1 / 0")
    assert (failed.ok, failed.status, failed.stdout) == (False, "failed", "before\n")
    assert failed.error is not None
    assert (failed.error["name"], failed.error["value"]) == (
        "ZeroDivisionError",
        "division by zero",
    )
    assert "ZeroDivisionError" in failed.error["traceback"]
    assert "\x1b" not in failed.error["traceback"]  # plain text, no colours
    assert (failed.error_message, failed.termination_reason) == (
        "the code raised an exception",
        "exit",
    )

    slow = session.run("import time\ntime.sleep(30)", timeout=1)
    assert (slow.ok, slow.status) == (False, "timeout")
    assert session.run("x").text == "7"  # interrupted: the variables stay

    session.restart()
    gone = session.run("x")
    assert gone.error is not None and gone.error["name"] == "NameError"


def test_a_matplotlib_plot_comes_back_as_png(client: Client) -> None:
    with client.session(packages=["matplotlib"]) as session:
        environment = session.info()["environment"]
        assert "matplotlib" in environment["packages"]
        plot = session.run(PLOT + "'done'")
        assert plot.ok, plot
        assert len(plot.images) == 1 and plot.images[0].startswith(PNG_MAGIC)
        assert plot.text == "'done'"
        shown = session.run("from IPython.display import HTML, display\ndisplay(HTML('<b>x</b>'))")
        assert (shown.html, shown.images) == (["<b>x</b>"], [])


async def test_async_sessions_are_entered_or_awaited(aclient: AsyncClient) -> None:
    async with aclient.session() as session:
        assert isinstance(session, AsyncSession)
        await session.run("items = [1, 2]")
        result = await session.run("items.append(3)\nsum(items)")
        assert (result.ok, result.text) == (True, "6")
        assert (await session.info())["executions"] == 2
    assert session.closed
    assert session.id not in {s["session_id"] for s in await aclient.sessions()}

    awaited = await aclient.session()
    try:
        assert (await awaited.run("2 ** 10")).text == "1024"
    finally:
        assert await awaited.close() is True
    with pytest.raises(JobNotFound):
        await awaited.info()


# -- the console script --------------------------------------------------------------------------


def test_session_commands_new_run_list_rm(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    new = cli(server, "session", "new", "--package", "matplotlib", "--idle-timeout", "120")
    assert new.returncode == 0, new.stderr
    session_id = new.stdout.strip()
    try:
        assert cli(server, "session", "run", session_id, "x = 21").returncode == 0
        done = cli(server, "session", "run", session_id, "-", input="print('x is', x)\nx * 2\n")
        assert (done.returncode, done.stdout, done.stderr) == (0, "x is 21\n42\n", "")

        images = tmp_path / "images"
        plot = cli(server, "session", "run", session_id, PLOT, "--images-dir", str(images))
        assert plot.returncode == 0, plot.stderr
        saved = sorted(images.iterdir())
        assert len(saved) == 1 and saved[0].read_bytes().startswith(PNG_MAGIC)
        assert plot.stdout == f"[image saved to {saved[0]}]\n"

        failed = cli(server, "session", "run", session_id, "1 / 0")
        assert (failed.returncode, failed.stdout) == (1, "")
        assert "ZeroDivisionError: division by zero" in failed.stderr

        as_json = json.loads(cli(server, "--json", "session", "run", session_id, "x").stdout)
        assert (as_json["status"], as_json["results"][0]["data"]["text/plain"]) == (
            "completed",
            "21",
        )

        table = cli(server, "session", "list").stdout.splitlines()
        assert table[0].split() == ["SESSION", "STATUS", "EXECUTIONS", "CREATED", "EXPIRES"]
        assert [session_id, "idle", "5"] in [line.split()[:3] for line in table], table
        assert "matplotlib==" in cli(server, "session", "show", session_id).stdout
    finally:
        removed = cli(server, "session", "rm", session_id)
    assert (removed.returncode, removed.stdout) == (0, f"session {session_id}: terminated\n")
    assert session_id not in listed(client)
    again = cli(server, "session", "rm", session_id)
    assert again.returncode == 2 and "not found" in one_line(again.stderr)
    dead = cli(server, "session", "run", session_id, "x")
    assert dead.returncode == 2 and "Session not found" in one_line(dead.stderr)


# -- the MCP tools -------------------------------------------------------------------------------


@pytest.fixture(params=["stdio", "http"])
def connect(
    request: pytest.FixtureRequest, server: ServerProcess
) -> Callable[[], AbstractAsyncContextManager[McpClient]]:
    make = stdio_client if request.param == "stdio" else http_client
    return lambda: make(server)


@contextlib.asynccontextmanager
async def no_session_left(aclient: AsyncClient) -> AsyncIterator[None]:
    before = {s["session_id"] for s in await aclient.sessions()}
    yield
    for info in await aclient.sessions():
        if info["session_id"] not in before:
            await AsyncSession(aclient, info["session_id"]).close()


async def test_mcp_session_runs_keep_state_and_return_images(
    connect: Callable[[], AbstractAsyncContextManager[McpClient]], aclient: AsyncClient
) -> None:
    async with no_session_left(aclient), connect() as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
        assert {"create_session", "close_session", "run_code"} <= set(tools)
        assert "session_id" in tools["run_code"].input_schema["properties"]

        created = data_of(await mcp.call_tool("create_session", {"packages": ["matplotlib"]}))
        session_id = created["session_id"]
        assert created["status"] == "idle" and set(created["packages"]) == {"matplotlib"}

        code = "n = 3\n" + PLOT + "print('plotted')\nn * 2"
        result = await mcp.call_tool("run_code", {"code": code, "session_id": session_id})
        run = data_of(result)
        assert (run["status"], run["session_id"], run["stdout"]) == (
            "completed",
            session_id,
            "plotted\n",
        )
        assert (run["value"], run["outputs"], run["error"]) == ("6", ["[image 1]"], None)
        images = [part for part in result.content if isinstance(part, ImageContent)]
        assert [image.mime_type for image in images] == ["image/png"]
        assert base64.b64decode(images[0].data).startswith(PNG_MAGIC)

        failed = data_of(
            await mcp.call_tool("run_code", {"code": "n / 0", "session_id": session_id})
        )
        assert (failed["status"], failed["error"]["name"]) == ("failed", "ZeroDivisionError")
        assert "n / 0" in failed["error"]["traceback"]
        kept = data_of(await mcp.call_tool("run_code", {"code": "n", "session_id": session_id}))
        assert kept["value"] == "3"

        closed = data_of(await mcp.call_tool("close_session", {"session_id": session_id}))
        assert closed == {"session_id": session_id, "status": "terminated"}
        after = await mcp.call_tool("run_code", {"code": "n", "session_id": session_id})
        assert after.is_error and "not found" in text_of(after).lower()
        shell = await mcp.call_tool(
            "run_code", {"code": "ls", "language": "shell", "session_id": session_id}
        )
        assert shell.is_error and "python only" in text_of(shell)
