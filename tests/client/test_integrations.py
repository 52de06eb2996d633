"""The framework adapters (``interpreter.integrations``) against a real server, with the real
libraries installed (the ``deepagents`` and ``openai-agents`` extras): the adapters driven the
way the frameworks call them, then through each framework's own agent loop with a scripted model
(no LLM, no network)."""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents import (
    Agent,
    RunConfig,
    RunContextWrapper,
    Runner,
    ShellActionRequest,
    ShellCallData,
    ShellCommandRequest,
    Usage,
)
from agents import ShellTool as AgentsShellTool
from agents.items import ModelResponse, TResponseOutputItem
from agents.models.interface import Model
from deepagents import create_deep_agent
from deepagents.backends.sandbox import BaseSandbox
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from openai.types.responses import (
    ResponseFunctionShellToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

import interpreter
from interpreter.client import AsyncClient, Client
from interpreter.integrations.deepagents import InterpreterSandbox
from interpreter.integrations.openai_agents import InterpreterShellExecutor, shell_tool
from tests.acceptance.server import ServerProcess
from tests.client.conftest import KEY, OTHER_KEY

PAYLOAD = bytes(range(256)) * 4  # every byte value, NUL included


@pytest.fixture
def sandbox(client: Client) -> Iterator[InterpreterSandbox]:
    with InterpreterSandbox(client=client) as sandbox:
        yield sandbox


def shell_call(
    *commands: str, timeout_ms: int | None = None, max_output_length: int | None = None
) -> ShellCommandRequest:
    action = ShellActionRequest(
        commands=list(commands), timeout_ms=timeout_ms, max_output_length=max_output_length
    )
    return ShellCommandRequest(
        ctx_wrapper=RunContextWrapper(context=None),
        data=ShellCallData(call_id="call_1", action=action),
    )


# -- LangChain Deep Agents ---------------------------------------------------------------------


def test_sandbox_is_a_deep_agents_sandbox(sandbox: InterpreterSandbox, client: Client) -> None:
    assert isinstance(sandbox, BaseSandbox)
    assert sandbox.id.startswith("sandbox-")
    assert InterpreterSandbox(client=client).id != sandbox.id


def test_execute_answers_output_in_order_and_exit_code(sandbox: InterpreterSandbox) -> None:
    response = sandbox.execute("echo one; echo two >&2; echo three")
    assert (response.output, response.exit_code, response.truncated) == (
        "one\ntwo\nthree\n",
        0,
        False,
    )
    failed = sandbox.execute("ls no-such-file")
    assert failed.exit_code == 2
    assert "No such file or directory" in failed.output
    assert sandbox.execute("exit 7").exit_code == 7


def test_execute_timeout_is_exit_code_124(sandbox: InterpreterSandbox) -> None:
    response = sandbox.execute("echo started; sleep 30", timeout=1)
    assert response.exit_code == 124
    assert response.output.startswith("started\n")
    assert "timed out after 1 seconds" in response.output
    with pytest.raises(ValueError):
        sandbox.execute("true", timeout=-1)


def test_execute_over_the_server_maximum_timeout_is_an_error_response(
    sandbox: InterpreterSandbox,
) -> None:
    response = sandbox.execute("true", timeout=10_000)
    assert response.exit_code == 1
    assert response.output.startswith("Error: ") and "timeout" in response.output


def test_files_written_by_one_command_are_read_by_the_next(sandbox: InterpreterSandbox) -> None:
    assert sandbox.execute("mkdir -p src && echo 'print(6 * 7)' > src/app.py").exit_code == 0
    response = sandbox.execute("python3 src/app.py && pwd")
    assert response.output == f"42\n{sandbox.workdir}\n"


def test_upload_then_download_round_trips_bytes(sandbox: InterpreterSandbox) -> None:
    root = sandbox.workdir
    uploads = sandbox.upload_files(
        [
            (f"{root}/data/blob.bin", PAYLOAD),
            ("notes/readme.md", b"# relative to the working directory\n"),
            ("../escape.txt", b"x"),
            ("/etc/planted", b"x"),
        ]
    )
    assert [(u.path, u.error) for u in uploads] == [
        (f"{root}/data/blob.bin", None),
        ("notes/readme.md", None),
        ("../escape.txt", "invalid_path"),
        ("/etc/planted", "permission_denied"),
    ]
    assert sandbox.execute("sha256sum data/blob.bin").output.split()[0] == (
        hashlib.sha256(PAYLOAD).hexdigest()
    )
    downloads = sandbox.download_files(
        [f"{root}/data/blob.bin", "notes/readme.md", f"{root}/missing.txt", f"{root}/data", ""]
    )
    assert [(d.content, d.error) for d in downloads] == [
        (PAYLOAD, None),
        (b"# relative to the working directory\n", None),
        (None, "file_not_found"),
        (None, "is_directory"),
        (None, "invalid_path"),
    ]


def test_upload_reports_each_file_that_could_not_be_written(sandbox: InterpreterSandbox) -> None:
    sandbox.execute("mkdir taken && ln -s /etc/passwd link")
    uploads = sandbox.upload_files([("ok.txt", b"ok"), ("taken", b"x"), ("link", b"x")])
    assert [u.error for u in uploads] == [None, "is_directory", "permission_denied"]
    assert sandbox.execute("cat ok.txt; test -d taken && test -L link").output == "ok"
    downloads = sandbox.download_files(["link"])
    assert (downloads[0].content, downloads[0].error) == (None, "permission_denied")


def test_base_sandbox_file_tools_run_on_the_server(sandbox: InterpreterSandbox) -> None:
    path = f"{sandbox.workdir}/pkg/mod.py"
    assert sandbox.write(path, "def answer():\n    return 41\n").error is None
    edited = sandbox.edit(path, "return 41", "return 42")
    assert (edited.error, edited.occurrences) == (None, 1)
    read = sandbox.read(path)
    assert read.error is None and read.file_data is not None
    assert "return 42" in read.file_data["content"]
    listing = sandbox.ls(f"{sandbox.workdir}/pkg")
    assert [entry["path"] for entry in listing.entries or []] == [path]
    grep = sandbox.grep("return 42", path=sandbox.workdir)
    assert [(m["path"], m["line"]) for m in grep.matches or []] == [(path, 2)]
    glob = sandbox.glob("**/*.py", path=sandbox.workdir)
    assert [m["path"] for m in glob.matches or []] == [path]
    assert sandbox.execute("python3 -c 'from pkg.mod import answer; print(answer())'").output == (
        "42\n"
    )


def test_a_sandbox_id_finds_its_files_again_for_its_key_only(
    server: ServerProcess, sandbox: InterpreterSandbox
) -> None:
    sandbox.upload_files([("kept.txt", b"kept")])
    with Client(server.url, api_key=KEY, transport=httpx.HTTPTransport()) as same_key:
        again = InterpreterSandbox(client=same_key, sandbox_id=sandbox.id)
        assert again.download_files(["kept.txt"])[0].content == b"kept"
    with Client(server.url, api_key=OTHER_KEY, transport=httpx.HTTPTransport()) as other_key:
        other = InterpreterSandbox(client=other_key, sandbox_id=sandbox.id)
        assert other.download_files(["kept.txt"])[0].error == "file_not_found"


def test_truncated_output_is_flagged(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(INTERPRETER_MAX_OUTPUT_BYTES="1024", INTERPRETER_RATE_LIMIT="off")
    with InterpreterSandbox(server.url) as sandbox:
        response = sandbox.execute("head -c 8000 /dev/zero | tr '\\0' a")
        assert (response.exit_code, response.truncated) == (0, True)
        assert "truncated" in response.output and len(response.output) < 2000


async def test_async_variants(aclient: AsyncClient, client: Client) -> None:
    sandbox = InterpreterSandbox(client=client, async_client=aclient)
    response = await sandbox.aexecute("echo async > a.txt; cat a.txt; exit 3")
    assert (response.output, response.exit_code) == ("async\n", 3)
    timed_out = await sandbox.aexecute("sleep 30", timeout=1)
    assert timed_out.exit_code == 124
    root = await sandbox.aworkdir()
    uploads = await sandbox.aupload_files([(f"{root}/b.bin", PAYLOAD), ("/b.bin", b"x")])
    assert [u.error for u in uploads] == [None, "permission_denied"]
    downloads = await sandbox.adownload_files(["a.txt", f"{root}/b.bin", "nope"])
    assert [(d.content, d.error) for d in downloads] == [
        (b"async\n", None),
        (PAYLOAD, None),
        (None, "file_not_found"),
    ]
    assert (await sandbox.awrite(f"{root}/w.txt", "written")).error is None
    read = await sandbox.aread(f"{root}/w.txt")
    assert read.file_data is not None and read.file_data["content"] == "written"


async def test_async_variants_without_a_client_of_their_own(server: ServerProcess) -> None:
    sandbox = InterpreterSandbox(server.url, KEY)
    assert (await sandbox.aexecute("echo hi")).output == "hi\n"
    assert sandbox.execute("echo hi >> a.txt; cat a.txt").output == "hi\n"
    sandbox.close()


class ScriptedModel(GenericFakeChatModel):
    """A chat model that answers the messages it was given, in order: no LLM, no network."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self


def tool_call(name: str, call_id: str, **args: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}])


def test_a_deep_agent_works_in_the_sandbox(sandbox: InterpreterSandbox) -> None:
    script = f"{sandbox.workdir}/hello.py"
    model = ScriptedModel(
        messages=iter(
            [
                tool_call("write_file", "1", file_path=script, content="print('hi from file')\n"),
                tool_call("execute", "2", command="python3 hello.py; exit 3"),
                tool_call("read_file", "3", file_path=script),
                tool_call("write_file", "4", file_path="/etc/agent.txt", content="no"),
                AIMessage("done"),
            ]
        )
    )
    agent = create_deep_agent(model=model, backend=sandbox)
    state = agent.invoke({"messages": [{"role": "user", "content": "run hello.py"}]})
    tools = {m.tool_call_id: m for m in state["messages"] if isinstance(m, ToolMessage)}
    assert "hi from file\n" in tools["2"].content and "exit code 3" in tools["2"].content
    assert tools["2"].artifact == {"exit_code": 3, "truncated": False}
    assert "print('hi from file')" in tools["3"].content
    assert tools["4"].content == "Failed to write file '/etc/agent.txt': permission_denied"
    assert state["messages"][-1].content == "done"


# -- OpenAI Agents SDK -------------------------------------------------------------------------


async def test_shell_executor_runs_each_command(aclient: AsyncClient) -> None:
    executor = InterpreterShellExecutor(client=aclient)
    result = await executor(shell_call("echo one", "echo two >&2; exit 4", "pwd"))
    first, second, third = result.output
    assert (first.command, first.stdout, first.stderr, first.outcome.type) == (
        "echo one",
        "one\n",
        "",
        "exit",
    )
    assert (second.stdout, second.stderr, second.outcome.exit_code) == ("", "two\n", 4)
    assert third.stdout.rstrip().endswith(executor.working_directory)
    assert result.provider_data == {"working_directory": executor.working_directory}


async def test_shell_executor_reports_a_timeout_as_its_own_outcome(aclient: AsyncClient) -> None:
    executor = InterpreterShellExecutor(client=aclient)
    result = await executor(shell_call("echo early; sleep 30", "echo never", timeout_ms=1000))
    assert len(result.output) == 1
    (output,) = result.output
    assert (output.outcome.type, output.outcome.exit_code, output.status) == (
        "timeout",
        None,
        "timeout",
    )
    assert output.stdout == "early\n"


async def test_shell_executor_honours_max_output_length(aclient: AsyncClient) -> None:
    executor = InterpreterShellExecutor(client=aclient)
    result = await executor(
        shell_call("seq 1000", "echo 1234; echo abcdef >&2", max_output_length=8)
    )
    assert result.max_output_length == 8
    assert [(o.stdout, o.stderr) for o in result.output] == [
        ("1\n2\n3\n4\n", ""),
        ("1234\n", "abc"),
    ]


async def test_shell_executor_keeps_files_between_calls(aclient: AsyncClient) -> None:
    executor = InterpreterShellExecutor(client=aclient)
    await executor(shell_call("mkdir out", "echo kept > out/file.txt"))
    result = await executor(shell_call("cat out/file.txt"))
    assert result.output[0].stdout == "kept\n"
    other = InterpreterShellExecutor(client=aclient)
    assert (await other(shell_call("cat out/file.txt"))).output[0].exit_code == 1


async def test_shell_tool_runs_on_the_server(server: ServerProcess) -> None:
    tool = shell_tool(server.url, KEY, needs_approval=True)
    assert isinstance(tool, AgentsShellTool)
    assert tool.needs_approval is True and tool.environment == {"type": "local"}
    assert isinstance(tool.executor, InterpreterShellExecutor)
    result = await tool.executor(shell_call("echo $((6 * 7))"))
    assert result.output[0].stdout == "42\n"


class ScriptedAgentsModel(Model):
    """An Agents SDK model that answers the items it was given, one per turn, and keeps what
    it was sent: no LLM, no network."""

    def __init__(self, outputs: list[TResponseOutputItem]) -> None:
        self.outputs = outputs
        self.inputs: list[Any] = []

    async def get_response(
        self, system_instructions: str | None, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        self.inputs.append(input)
        return ModelResponse(output=[self.outputs.pop(0)], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


async def test_an_agent_runs_the_shell_tool_on_the_server(server: ServerProcess) -> None:
    call = ResponseFunctionShellToolCall(
        id="sh_1",
        call_id="call_1",
        type="shell_call",
        status="completed",
        action={
            "commands": ["echo hi > f.txt", "cat f.txt; echo err >&2", "sleep 30", "echo never"],
            "timeout_ms": 1000,
            "max_output_length": 100,
        },
    )
    text = ResponseOutputText(type="output_text", text="done", annotations=[])
    done = ResponseOutputMessage(
        id="m_1", type="message", role="assistant", status="completed", content=[text]
    )
    model = ScriptedAgentsModel([call, done])
    agent = Agent(name="coder", model=model, tools=[shell_tool(server.url, KEY)])
    result = await Runner.run(agent, "go", run_config=RunConfig(tracing_disabled=True))
    assert result.final_output == "done"
    [sent] = [item for item in model.inputs[1] if item.get("type") == "shell_call_output"]
    assert sent["call_id"] == "call_1"
    assert [(o["stdout"], o["stderr"], o["outcome"]) for o in sent["output"]] == [
        ("", "", {"type": "exit", "exit_code": 0}),
        ("hi\n", "err\n", {"type": "exit", "exit_code": 0}),
        ("", "", {"type": "timeout"}),
    ]


# -- packaging ---------------------------------------------------------------------------------


def test_only_the_integrations_import_the_frameworks() -> None:
    package = Path(interpreter.__file__).parent
    frameworks = {"agents", "deepagents", "langchain", "langchain_core", "langgraph", "openai"}
    frameworks |= {"smolagents"}
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            if any(name.partition(".")[0] in frameworks for name in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {
        "integrations/deepagents.py",
        "integrations/openai_agents.py",
        "integrations/langchain.py",
        "integrations/smolagents.py",
    }
