"""The server's entry points need the ``server`` extra; the client (``interpreter.client``)
needs httpx only. Without the extra, ``python -m interpreter.server`` (or ``.worker``) says so in
one line instead of a traceback."""

from __future__ import annotations

import sys

# The top-level modules the `server` extra of pyproject.toml brings.
SERVER_MODULES = frozenset(
    {
        "fastapi",
        "starlette",
        "uvicorn",
        "pydantic",
        "pydantic_core",
        "pydantic_settings",
        "sqlalchemy",
        "psutil",
        "prometheus_client",
        "limits",
        "procrastinate",
        "psycopg",
        "psycopg_pool",
        "multipart",
        "python_multipart",
    }
)


def missing_server_extra(exc: ModuleNotFoundError, module: str) -> str | None:
    """The one line to print when ``exc`` is a module of the server extra, else None."""
    top = (exc.name or "").partition(".")[0]
    if top not in SERVER_MODULES:
        return None
    return (
        f"{module} needs the server's dependencies (no module {top!r}): install "
        "interpreter-server[server] (pip install 'interpreter-server[server]', or '.[server]' "
        "in a checkout)"
    )


def require_server_extra(exc: ModuleNotFoundError, module: str) -> None:
    """Called by ``module`` (a server entry point) when one of its imports failed: run as
    ``python -m <module>``, print the one line and exit 2; imported, raise a
    ``ModuleNotFoundError`` that says the same. Not a module of the extra: return (the caller
    re-raises)."""
    message = missing_server_extra(exc, module)
    if message is None:
        return
    argv = list(getattr(sys, "orig_argv", []))
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1] == module:
        print(message, file=sys.stderr)
        raise SystemExit(2)
    raise ModuleNotFoundError(message, name=exc.name) from exc
