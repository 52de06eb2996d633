"""Adapters that plug the server into agent frameworks, each needing its framework as an
optional extra; the shell adapters are built on the Python SDK (``interpreter.client``):

- ``interpreter.integrations.deepagents``: ``InterpreterSandbox``, a LangChain Deep Agents
  sandbox backend (``pip install 'interpreter-server[deepagents]'``);
- ``interpreter.integrations.openai_agents``: ``InterpreterShellExecutor`` and ``shell_tool``,
  the OpenAI Agents SDK's ``ShellTool`` run on the server
  (``pip install 'interpreter-server[openai-agents]'``);
- ``interpreter.integrations.smolagents``: ``InterpreterExecutor``, a smolagents remote Python
  executor whose code runs in a session (``pip install 'interpreter-server[smolagents]'``);
- ``interpreter.integrations.langchain``: ``InterpreterPythonTool``, a LangChain tool that runs
  Python in a session (``pip install 'interpreter-server[langchain]'``).

The session adapters speak HTTP to the ``/sessions`` routes themselves (``httpx``).

Importing this package imports no framework; import the adapter's module.
"""
