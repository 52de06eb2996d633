"""The OpenAI Agents SDK's ``ShellTool`` run on the server (``pip install
'interpreter-server[openai-agents]'``)::

    from agents import Agent
    from interpreter.integrations.openai_agents import shell_tool

    agent = Agent(name="coder", tools=[shell_tool(base_url="http://127.0.0.1:8000", api_key="...")])

Each command of a shell call is a ``shell`` job in the executor's one named working directory,
so files persist from command to command and call to call. A command that runs past the call's
``timeout_ms`` is reported with the outcome ``timeout`` (not an exit code) and the commands after
it are not run; ``max_output_length`` bounds each command's stdout and stderr together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents import ShellCallOutcome, ShellCommandOutput, ShellCommandRequest, ShellResult, ShellTool

from interpreter.client import AsyncClient, Result
from interpreter.integrations._shell import (
    async_client,
    exit_code,
    new_directory_name,
    server_note,
    truncated,
)

__all__ = ["InterpreterShellExecutor", "shell_tool"]


class InterpreterShellExecutor:
    """A ``ShellExecutor``: runs a ``ShellCommandRequest``'s commands as jobs of the server at
    ``base_url`` (else ``$INTERPRETER_URL``) with ``api_key`` (else ``$INTERPRETER_API_KEY``), or
    through ``client`` (an ``AsyncClient`` belongs to one event loop; without one, each call
    opens its own).

    ``working_directory`` names the directory the commands share (a fresh ``shell-<hex>`` by
    default); ``timeout_s`` is each command's timeout when the call gives no ``timeout_ms``
    (None: the server's default); ``environment`` the variables every command gets.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        client: AsyncClient | None = None,
        working_directory: str | None = None,
        timeout_s: float | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._client = client
        self.working_directory = working_directory or new_directory_name("shell")
        self.timeout_s = timeout_s
        self._environment = dict(environment) if environment is not None else None

    async def __call__(self, request: ShellCommandRequest) -> ShellResult:
        action = request.data.action
        timeout_s = action.timeout_ms / 1000 if action.timeout_ms else self.timeout_s
        outputs: list[ShellCommandOutput] = []
        async with async_client(self._client, self._base_url, self._api_key) as client:
            for command in action.commands:
                result = await client.run(
                    command,
                    language="shell",
                    timeout=timeout_s,
                    working_directory=self.working_directory,
                    environment=self._environment,
                )
                outputs.append(_command_output(command, result, action.max_output_length))
                if result.timed_out:
                    break  # as a terminal would: the rest of the sequence never starts
        return ShellResult(
            output=outputs,
            max_output_length=action.max_output_length,
            provider_data={"working_directory": self.working_directory},
        )


def shell_tool(
    base_url: str | None = None,
    api_key: str | None = None,
    *,
    executor: InterpreterShellExecutor | None = None,
    **options: Any,
) -> ShellTool:
    """A ``ShellTool`` whose commands run on the server: ``executor``, or one made with
    ``base_url`` and ``api_key``; ``options`` go to ``ShellTool`` (``name``,
    ``needs_approval``, ``on_approval``, ...)."""
    return ShellTool(executor=executor or InterpreterShellExecutor(base_url, api_key), **options)


def _command_output(command: str, result: Result, max_length: int | None) -> ShellCommandOutput:
    stdout, stderr = result.stdout, result.stderr
    note = server_note(result)
    if note is not None and not result.timed_out:  # a memory limit, a signal, ...
        stderr = f"{stderr.rstrip()}\n{note}" if stderr else note
    if max_length is not None:
        stdout, stderr = _truncate(stdout, stderr, max(0, max_length))
    outcome = (
        ShellCallOutcome(type="timeout")
        if result.timed_out
        else ShellCallOutcome(type="exit", exit_code=exit_code(result))
    )
    return ShellCommandOutput(
        stdout=stdout,
        stderr=stderr,
        outcome=outcome,
        command=command,
        provider_data={"job_id": result.job_id, "truncated": truncated(result)},
    )


def _truncate(stdout: str, stderr: str, max_length: int) -> tuple[str, str]:
    """At most ``max_length`` characters of the command's output: stdout first, then stderr
    (as the Agents SDK itself cuts a call's outputs)."""
    stdout = stdout[:max_length]
    return stdout, stderr[: max_length - len(stdout)]
