"""The spec's own check script, ``test_structured_api.py``, passes against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.acceptance.server import REPO_ROOT, ServerProcess

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]


def test_spec_check_script_passes_against_a_live_server(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}  # no proxy
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "test_structured_api.py"), server.url],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert completed.returncode == 0, (
        f"test_structured_api.py exited {completed.returncode}\n"
        f"{completed.stdout}\n{completed.stderr}"
    )
    assert "FAIL" not in completed.stdout
