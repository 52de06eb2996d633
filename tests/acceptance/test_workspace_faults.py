"""What a job does to its working directory counts as it is on disk, and never makes the next
job there fail for the server's reasons."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.server import (
    ServerProcess,
    live_directory,
    running_server,
    submit,
    wait_final,
    wait_for_file,
    wait_for_status,
)
from tests.sandbox.usable import UNUSABLE

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

MiB = 1 << 20
SANDBOXES = [
    pytest.param(
        "bwrap", marks=pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox: {UNUSABLE}")
    ),
    "none",
]


@pytest.fixture(scope="module", params=SANDBOXES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    sandbox = request.param
    directory = tmp_path_factory.mktemp(f"faults-{sandbox}")
    with running_server(directory, INTERPRETER_SANDBOX=sandbox, INTERPRETER_MAX_JOBS="2") as s:
        yield s


def run(client: httpx.Client, code: str, **fields: object) -> dict[str, object]:
    job_id = submit(client, code, **fields)
    final = wait_final(client, job_id, deadline_s=60)
    response = client.get(f"/jobs/{job_id}/results")
    assert response.status_code == 200, response.text
    return {**final, **response.json()}


HARD_LINKS = """\
import os
with open("big", "wb") as f:
    f.write(os.urandom(10 * 1024 * 1024))
os.mkdir("sub")
for i in range(8):
    os.link("big", f"sub/link{i}" if i % 2 else f"link{i}")
print(os.stat("big").st_nlink)
"""


@pytest.mark.parametrize("working_directory", [None, "links"])
def test_hard_links_count_once_against_the_workspace_limit(
    server: ServerProcess, working_directory: str | None
) -> None:
    fields: dict[str, object] = {"limits": {"workspace_bytes": 50 * MiB}}
    if working_directory:
        fields["working_directory"] = working_directory
    final = run(server.client(), HARD_LINKS, **fields)
    assert final["status"] == "completed", final
    assert final["stdout"] == "9\n"
    assert "link7" in " ".join(map(str, final["files_created"])) or not final["files_complete"]
    if working_directory:  # what the next job finds: every name, one file on disk
        check = run(
            server.client(),
            "import os\n"
            "names = ['big'] + [f'sub/link{i}' if i % 2 else f'link{i}' for i in range(8)]\n"
            "print(len({os.stat(n).st_ino for n in names}), os.stat('big').st_size)\n",
            working_directory=working_directory,
        )
        assert check["status"] == "completed", check
        assert check["stdout"] == f"1 {10 * MiB}\n"


@pytest.mark.parametrize("mode", ["000", "100"])
def test_a_job_that_locks_its_named_directory_leaves_it_usable_for_the_next(
    server: ServerProcess, mode: str
) -> None:
    client = server.client()
    directory = f"locked-{mode}"
    first = run(
        client,
        f"import os\nopen('kept.txt', 'w').write('kept\\n')\nos.chmod('.', 0o{mode})\n",
        working_directory=directory,
    )
    assert first["status"] == "completed", first
    second = run(
        client,
        "import os\nprint(open('kept.txt').read(), end='')\nopen('new.txt', 'w').write('x')\n"
        "print(sorted(os.listdir('.')))\n",
        working_directory=directory,
    )
    assert second["status"] == "completed", second
    assert second["stdout"] == "kept\n['kept.txt', 'new.txt']\n"


class OwnerOnlyServer(ServerProcess):
    """A root server without the capabilities that let root ignore a directory's mode: as a
    server run by a plain user would be (whose jobs run as that user without the sandbox)."""

    def spawn(self) -> subprocess.Popen[bytes]:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None
        self.starts += 1
        with (
            self.stdout_path.open("ab") as stdout,
            self.stderr_path.open("ab") as stderr,
        ):
            self.popen = subprocess.Popen(
                [
                    setpriv,
                    "--bounding-set",
                    "-dac_override,-dac_read_search,-fowner",
                    "--",
                    sys.executable,
                    "-m",
                    self.module,
                ],
                cwd=self.directory,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        return self.popen


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv (util-linux)")
@pytest.mark.parametrize("mode", ["000", "100"])
def test_a_job_that_locks_its_named_directory_leaves_it_usable_for_a_plain_users_server(
    tmp_path: Path, mode: str
) -> None:
    server = OwnerOnlyServer(tmp_path / "server", {"INTERPRETER_SANDBOX": "none"})
    try:
        server.start()
        client = server.client()
        first = run(
            client,
            f"import os\nopen('kept.txt', 'w').write('kept\\n')\nos.chmod('.', 0o{mode})\n",
            working_directory="locked",
        )
        assert first["status"] == "completed", first
        second = run(
            client,
            "import os\nprint(open('kept.txt').read(), end='')\n"
            "open('new.txt', 'w').write('x')\nprint(sorted(os.listdir('.')))\n",
            working_directory="locked",
        )
        assert second["status"] == "completed", second
        assert second["stdout"] == "kept\n['kept.txt', 'new.txt']\n"
    finally:
        server.cleanup()


TERM_THEN_PRINT = """\
import signal, sys, time
def bye(*_):
    time.sleep(1.5)  # within the kill grace, after the sweep deleted the cancelled job
    print("bye", flush=True)
    print("bye-err", file=sys.stderr, flush=True)
    open("late.txt", "w").write("late")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
open("ready.txt", "w").write("ready\\n")
time.sleep(60)
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_nothing_of_a_cancelled_job_outlives_its_deletion(tmp_path: Path, sandbox: str) -> None:
    env = {
        "INTERPRETER_SANDBOX": sandbox,
        "INTERPRETER_JOB_TTL": "0.3",
        "INTERPRETER_CLEANUP_INTERVAL_S": "0.1",
        "INTERPRETER_KILL_GRACE_S": "4",
    }
    with running_server(tmp_path / "server", **env) as server:
        client = server.client()
        job_id = submit(client, TERM_THEN_PRINT, timeout=60)
        wait_for_status(client, job_id, {"running"}, deadline_s=10)
        ready = (
            live_directory(server, job_id) if sandbox == "bwrap" else server.workspace_root / job_id
        )
        wait_for_file(ready / "ready.txt")
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
        give_up = time.monotonic() + 10
        while client.get(f"/jobs/{job_id}/status").status_code != 404:  # swept by retention
            assert time.monotonic() < give_up, "the cancelled job was never deleted"
            time.sleep(0.05)
        time.sleep(3.0)  # the job printed and exited meanwhile; its run has ended
        left = [p.name for p in server.data_dir.rglob(f"*{job_id}*")]
        left += [p.name for p in server.workspace_root.rglob(f"*{job_id}*")]
        assert left == []
