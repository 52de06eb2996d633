"""Sessions: sandboxed Python kernels that keep their variables between executions.

- ``kernel``: one ipykernel in the sandbox and the client that speaks to it;
- ``cell``: what one execution gave (printed text, display outputs, an exception), capped;
- ``manager``: a server's sessions, their caps and reaping, and their executions.
"""
