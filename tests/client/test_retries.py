"""Retries of 429 over a server's rate limit: ``Retry-After`` honoured, at most ``max_retries``."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from interpreter.client import Client, ClientError, RateLimited
from tests.acceptance.server import ServerProcess


def test_rate_limited_honours_retry_after(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(INTERPRETER_RATE_LIMIT="1/3 seconds")
    with Client(server.url, max_retries=0) as impatient:
        impatient.submit("print(1)")
        with pytest.raises(RateLimited) as limited:
            impatient.submit("print(2)")
    error = limited.value
    assert isinstance(error, ClientError) and error.status_code == 429
    assert error.retry_after is not None and 0 < error.retry_after <= 3
    assert "rate limit" in error.detail

    with Client(server.url, max_retries=3) as patient:
        started = time.monotonic()
        assert patient.run("print(3)").stdout == "3\n"  # waited out the window, then ran
        assert patient.run("print(4)").stdout == "4\n"
        assert time.monotonic() - started >= 0.9


def test_run_long_polls_when_the_one_round_trip_ends_first(
    start_server: Callable[..., ServerProcess],
) -> None:
    """With one job slot taken, a job waits longer than ``POST /execute?wait=`` (its timeout
    plus a margin): ``run`` then follows it with long polls and still answers its result."""
    server = start_server(INTERPRETER_MAX_JOBS="1")
    with Client(server.url) as client:
        blocker = client.submit("import time\ntime.sleep(8)")
        started = time.monotonic()
        result = client.run("print('after')", timeout=1)  # ?wait=6: answered still pending
        assert result.stdout == "after\n" and result.ok
        assert time.monotonic() - started > 6
        assert blocker.status() == "completed"
