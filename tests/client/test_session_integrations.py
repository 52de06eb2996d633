"""The session adapters (``interpreter.integrations.smolagents`` and ``.langchain``) against a
real server, with the real libraries installed (the ``smolagents`` and ``langchain`` extras):
smolagents' ``CodeAgent`` driven by a scripted model (no LLM, no network) with its code run in
a session, and LangChain's tool invoked as an agent invokes it. Each session installs its
packages with uv the first time the server sees them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from smolagents import CodeAgent
from smolagents.models import ChatMessage, MessageRole, Model
from smolagents.monitoring import AgentLogger, LogLevel
from smolagents.utils import AgentError

from interpreter.integrations.langchain import InterpreterPythonTool
from interpreter.integrations.smolagents import InterpreterExecutor
from tests.acceptance.server import ServerProcess
from tests.client.conftest import KEY
from tests.sandbox.usable import UNUSABLE

pytestmark = [
    pytest.mark.timeout(240),  # a session's first environment is installed with uv
    pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox: {UNUSABLE}"),
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUIET = AgentLogger(level=LogLevel.OFF)


def session_status(server: ServerProcess, session_id: str | None) -> int:
    """The status code of ``GET /sessions/{id}``: 200 while the session lives, else 404."""
    headers = {"X-API-Key": KEY}
    return httpx.get(f"{server.url}/sessions/{session_id}", headers=headers).status_code


def end_session(server: ServerProcess, session_id: str | None) -> None:
    """End a session behind its adapter's back, as the idle reaper would."""
    headers = {"X-API-Key": KEY}
    assert httpx.delete(f"{server.url}/sessions/{session_id}", headers=headers).status_code == 200


# -- smolagents --------------------------------------------------------------------------------


class ScriptedModel(Model):
    """A smolagents model that answers the replies it was given, one per step, and keeps the
    messages it was sent: no LLM, no network."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(model_id="scripted")
        self.replies = replies
        self.sent: list[list[Any]] = []

    def generate(self, messages: list[Any], *args: Any, **kwargs: Any) -> ChatMessage:
        self.sent.append(messages)
        return ChatMessage(role=MessageRole.ASSISTANT, content=self.replies.pop(0))


@pytest.fixture
def executor(server: ServerProcess) -> Iterator[InterpreterExecutor]:
    executor = InterpreterExecutor(server.url, KEY, logger=QUIET)
    yield executor
    executor.cleanup()


def test_a_code_agent_runs_its_steps_in_one_session(server: ServerProcess) -> None:
    model = ScriptedModel(
        [
            "Thought: count first.\n<code>\ntotal = sum(range(10))\nprint('total is', total)\n"
            "</code>",
            "Thought: now answer.\n<code>\nfinal_answer({'double': total * 2, 'pair': (1, 2)})\n"
            "</code>",
        ]
    )
    executor = InterpreterExecutor(server.url, KEY, logger=QUIET)
    with CodeAgent(tools=[], model=model, executor=executor, logger=QUIET) as agent:
        answer = agent.run("Double the sum of 0..9.")
        session_id = executor.session_id
        assert session_status(server, session_id) == 200
    assert answer == {"double": 90, "pair": (1, 2)}
    assert model.replies == []  # two steps: the answer came from the second one
    assert "total is 45" in agent.memory.steps[1].observations
    assert session_status(server, session_id) == 404  # leaving the agent deleted it
    assert executor.session_id is None


def test_run_code_raise_errors_answers_values_logs_and_errors(
    executor: InterpreterExecutor,
) -> None:
    assert executor.session_id is None  # started on first use
    first = executor.run_code_raise_errors(
        "x = 20\nprint('set'); import sys; print('e', file=sys.stderr)"
    )
    assert (first.output, first.logs, first.is_final_answer) == (None, "set\ne\n", False)
    second = executor.run_code_raise_errors("x + 1")
    assert (second.output, second.is_final_answer) == ("21", False)
    with pytest.raises(AgentError) as raised:
        executor.run_code_raise_errors("print('before'); x / 0")
    message = str(raised.value)
    assert message.startswith("before\n\nExecuting code yielded an error:\nZeroDivisionError\n")
    assert "division by zero" in message and "Traceback" in message
    assert executor.run_code_raise_errors("x").output == "20"  # the session lives on


def test_a_timeout_is_an_agent_error(server: ServerProcess) -> None:
    executor = InterpreterExecutor(server.url, KEY, logger=QUIET, timeout_s=1)
    try:
        with pytest.raises(AgentError, match="timed out after 1 s"):
            executor.run_code_raise_errors("import time\ntime.sleep(30)")
    finally:
        executor.cleanup()


def test_new_packages_and_an_ended_session_start_a_new_one(
    server: ServerProcess, executor: InterpreterExecutor
) -> None:
    executor.send_variables({"kept": [1, 2, 3]})
    first = executor.session_id
    executor.run_code_raise_errors("lost = 1")
    executor.install_packages(["six"])
    assert executor.packages == ["six"]
    assert executor.session_id != first and session_status(server, first) == 404
    output = executor.run_code_raise_errors("import six\n(kept, 'lost' in globals())")
    assert output.output == "([1, 2, 3], False)"  # what was sent is sent again

    end_session(server, executor.session_id)
    again = executor.run_code_raise_errors("kept")
    assert again.output == "[1, 2, 3]"
    assert again.logs.startswith("Note: the session ended")


# -- LangChain ---------------------------------------------------------------------------------


def call(tool: BaseTool, code: str, call_id: str = "call_1") -> ToolMessage:
    """Invoke ``tool`` as an agent does, with a tool call: a ToolMessage with its artifact."""
    message = tool.invoke(
        {"name": tool.name, "args": {"code": code}, "id": call_id, "type": "tool_call"}
    )
    assert isinstance(message, ToolMessage)
    return message


@pytest.fixture
def python_tool(server: ServerProcess) -> Iterator[InterpreterPythonTool]:
    with InterpreterPythonTool(server.url, KEY) as tool:
        yield tool


def test_the_tool_keeps_state_between_calls(
    server: ServerProcess, python_tool: InterpreterPythonTool
) -> None:
    assert isinstance(python_tool, BaseTool)
    assert python_tool.name == "python" and "code" in python_tool.args
    first = call(python_tool, "answer = 6 * 7\nprint('defined')")
    assert (first.content, first.status) == ("stdout:\ndefined", "success")
    second = call(python_tool, "answer + 0.5")
    assert second.content == "result: 42.5"
    assert second.artifact["images"] == []
    assert second.artifact["result"]["session_id"] == python_tool.session_id
    assert second.artifact["result"]["status"] == "completed"
    assert python_tool.invoke({"code": "answer"}) == "result: 42"  # plain input: content only

    failed = call(python_tool, "import sys; print('oops', file=sys.stderr); answer / 0")
    assert failed.content.startswith("stderr:\noops\nerror: ZeroDivisionError: division by zero\n")
    assert failed.artifact["result"]["error"]["name"] == "ZeroDivisionError"

    python_tool.timeout_s = 1
    timed_out = call(python_tool, "import time\nprint('waiting', flush=True)\ntime.sleep(30)")
    assert timed_out.content.startswith("stdout:\nwaiting\nerror: timed out after 1 s")
    assert timed_out.artifact["result"]["status"] == "timeout"
    assert call(python_tool, "answer").content == "result: 42"  # interrupted, variables kept

    end_session(server, python_tool.session_id)
    renewed = call(python_tool, "'answer' in globals()")
    assert renewed.content.startswith("Note: the session ended")
    assert renewed.content.endswith("result: False")


async def test_ainvoke_runs_in_the_same_session(python_tool: InterpreterPythonTool) -> None:
    call(python_tool, "counter = 1")
    for _ in range(2):
        await python_tool.ainvoke({"code": "counter += 1"})
    assert (await python_tool.ainvoke({"code": "counter"})) == "result: 3"


def test_a_matplotlib_plot_is_an_image_artifact(server: ServerProcess) -> None:
    with InterpreterPythonTool(server.url, KEY, packages=["matplotlib"]) as tool:
        message = call(
            tool,
            "import matplotlib.pyplot as plt\n"
            "plt.plot([1, 4, 9])\nplt.title('squares')\nplt.show()\nprint('plotted')",
        )
        session_id = tool.session_id
    assert message.content == "stdout:\nplotted\nimages: 1 displayed"
    [image] = message.artifact["images"]
    assert image.startswith(PNG_MAGIC) and len(image) > 1000
    assert session_status(server, session_id) == 404  # the with block deleted it


def test_a_refused_call_is_told_to_the_model(server: ServerProcess) -> None:
    with InterpreterPythonTool(server.url, "not-a-key") as tool:
        message = call(tool, "1 + 1")
    assert message.status == "error"
    assert message.content == "POST /sessions answered 401: Invalid API key"
