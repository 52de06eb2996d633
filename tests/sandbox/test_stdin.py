"""stdin in the bubblewrap sandbox: fed behind the gate, read-only, never the gate's own pipe."""

from __future__ import annotations

import pytest

from tests.sandbox.usable import UNUSABLE

pytestmark = pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox here: {UNUSABLE}")


async def test_a_sandboxed_job_reads_its_stdin(make_api) -> None:
    api = await make_api(sandbox="bwrap")
    code = "import sys; print(sys.stdin.read().upper(), end='')"

    result = await api.run(code, stdin="first\nsecond\n")

    assert result["status"] == "completed", result
    assert result["stdout"] == "FIRST\nSECOND\n"


async def test_a_sandboxed_job_without_stdin_reads_nothing(make_api) -> None:
    api = await make_api(sandbox="bwrap")

    result = await api.run("import sys; print(repr(sys.stdin.read()))")

    assert result["stdout"] == "''\n"


async def test_a_sandboxed_shell_job_reads_lines(make_api) -> None:
    api = await make_api(sandbox="bwrap")

    result = await api.run('read -r a; read -r b; echo "$b $a"', "shell", stdin="x\ny\n")

    assert result["stdout"] == "y x\n"
