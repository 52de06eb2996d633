"""The Python SDK of the server: ``Client`` (and ``AsyncClient``) run code as jobs and answer
typed results, retrying safely. It needs httpx only, nothing of the server's dependencies::

    from interpreter.client import Client

    with Client("http://127.0.0.1:8000") as client:
        result = client.run("print(6 * 7)")
        print(result.stdout)  # 42

        with client.session(packages=["matplotlib"]) as session:  # a kernel that keeps state
            session.run("x = 6")
            print(session.run("x * 7").text)  # 42
"""

from __future__ import annotations

from interpreter.client._async import AsyncClient, AsyncJob, AsyncSession
from interpreter.client._errors import (
    AuthenticationError,
    ClientError,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    RateLimited,
    ServerUnavailable,
    WaitTimeout,
)
from interpreter.client._models import (
    CellResult,
    EnvironmentInfo,
    FileInfo,
    OutputEvent,
    PackageEnvironment,
    Result,
)
from interpreter.client._sync import Client, Job, Session

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "AsyncSession",
    "AuthenticationError",
    "CellResult",
    "Client",
    "ClientError",
    "EnvironmentInfo",
    "FileInfo",
    "InvalidRequest",
    "Job",
    "JobConflict",
    "JobNotFound",
    "OutputEvent",
    "PackageEnvironment",
    "RateLimited",
    "Result",
    "ServerUnavailable",
    "Session",
    "WaitTimeout",
]
