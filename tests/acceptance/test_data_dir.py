"""A data directory belongs to one process that runs jobs: a second server or worker started on
it refuses, saying why, and the first goes on serving; once the first dies, a new one starts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.acceptance.server import ServerProcess, submit, wait_final

pytestmark = pytest.mark.acceptance


def test_a_second_server_on_the_same_data_directory_refuses(
    start_server: Callable[..., ServerProcess],
) -> None:
    first = start_server()
    second = ServerProcess(first.directory, {}, "interpreter.server")
    try:
        second.spawn()
        code = second.popen.wait(20) if second.popen else None
        assert code not in (None, 0)
        log = second.stderr_path.read_text()
        assert f"another process (pid {first.pid}) runs jobs from {first.data_dir}" in log
    finally:
        second.cleanup()
    client = first.client()
    assert wait_final(client, submit(client, "print('still here')"))["status"] == "completed"

    first.kill()  # the kernel drops the lock with the process
    first.start()
    client = first.client()
    assert wait_final(client, submit(client, "print('again')"))["status"] == "completed"
