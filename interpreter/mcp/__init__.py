"""The MCP server: the tools ``run_code``, ``read_file`` and ``list_files`` for agent apps.

Two transports: stdio (``python -m interpreter.mcp --server URL``, ``interpreter mcp``), a
client of a server over HTTP; and streamable HTTP, mounted by the API server at ``/mcp``. Both
call the server through the Python SDK (``interpreter.client.AsyncClient``). The ``mcp``
package is an optional extra: nothing here imports it until a transport is started.
"""
