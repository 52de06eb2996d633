"""Adapters that plug the server into agent frameworks, each built on the Python SDK
(``interpreter.client``) and each needing its framework as an optional extra:

- ``interpreter.integrations.deepagents``: ``InterpreterSandbox``, a LangChain Deep Agents
  sandbox backend (``pip install 'interpreter-server[deepagents]'``);
- ``interpreter.integrations.openai_agents``: ``InterpreterShellExecutor`` and ``shell_tool``,
  the OpenAI Agents SDK's ``ShellTool`` run on the server
  (``pip install 'interpreter-server[openai-agents]'``).

Importing this package imports neither framework; import the adapter's module.
"""
