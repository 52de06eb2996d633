"""The ``interpreter`` console script as a user runs it: a subprocess against a live server, its
output through pipes, and on a pseudo-terminal for the progress line."""

from __future__ import annotations

import ast
import contextlib
import errno
import json
import os
import re
import select
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interpreter.client import Client
from tests.acceptance.server import REPO_ROOT, ServerProcess
from tests.client.conftest import KEY
from tests.client.test_packaging import blocked_env

SCRIPT = Path(sys.executable).parent / "interpreter"  # .venv/bin/interpreter
SLOW = "import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second', flush=True)\n"
LONG = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    assert SCRIPT.is_file(), f"no console script at {SCRIPT}: pip install -e '.[test]'"


def cli_env(server: ServerProcess, **extra: str) -> dict[str, str]:
    """A user's environment: the server and key from INTERPRETER_URL / INTERPRETER_API_KEY."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("HOME", "/tmp"),
        "INTERPRETER_URL": server.url,
        "INTERPRETER_API_KEY": KEY,
        **extra,
    }


def cli(
    server: ServerProcess,
    *args: str,
    input: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env=env or cli_env(server),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def run_json(server: ServerProcess, *args: str) -> dict[str, Any]:
    done = cli(server, "--json", "run", *args)
    document: dict[str, Any] = json.loads(done.stdout)
    return document


@contextlib.contextmanager
def popen(server: ServerProcess, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [str(SCRIPT), *args],
        env=cli_env(server),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


def wait_status(client: Client, job_id: str, wanted: str, deadline_s: float = 15.0) -> None:
    give_up_at = time.monotonic() + deadline_s
    while time.monotonic() < give_up_at:
        if client.job(job_id).status() == wanted:
            return
        time.sleep(0.05)
    pytest.fail(f"job {job_id} never {wanted}")


# -- run ---------------------------------------------------------------------------------------


def test_run_separates_stdout_and_stderr_and_exits_with_the_jobs_code(
    server: ServerProcess,
) -> None:
    done = cli(
        server, "run", "-c", "import sys\nprint('out')\nprint('err', file=sys.stderr)\nexit(3)"
    )
    assert done.returncode == 3
    assert done.stdout == "out\n"
    assert done.stderr == "err\n"  # no progress line: stderr is not a terminal


def test_run_a_file_guesses_its_language_and_exits_0(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "hello.sh").write_text('echo "hello from $0" | cut -c1-10\n')
    done = cli(server, "run", "hello.sh", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello from\n", "")
    (tmp_path / "hello.js").write_text("console.log(6 * 7)\n")
    done = cli(server, "run", str(tmp_path / "hello.js"))
    assert (done.returncode, done.stdout) == (0, "42\n")


def test_a_timeout_exits_124_and_says_so(server: ServerProcess) -> None:
    done = cli(server, "run", "--timeout", "1", "-c", "import time; time.sleep(30)")
    assert done.returncode == 124
    assert done.stdout == ""
    assert "timed out" in one_line(done.stderr)


def test_output_streams_live(server: ServerProcess) -> None:
    with popen(server, "run", "-c", SLOW) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        first_at = time.monotonic()
        assert first == b"first\n"
        assert proc.poll() is None  # the job (and the command) still runs
        second = proc.stdout.readline()
        assert second == b"second\n"
        assert time.monotonic() - first_at >= 1.5
        assert proc.wait(timeout=30) == 0


def test_ctrl_c_cancels_the_job(server: ServerProcess, client: Client) -> None:
    with popen(server, "run", "-c", LONG) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"started\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        stderr = proc.stderr.read().decode()
    job_id = one_line(stderr).removeprefix("interpreter: cancelled job ")
    assert client.job(job_id).status() == "cancelled"


def test_a_closed_pipe_cancels_the_job_and_exits_141(server: ServerProcess, client: Client) -> None:
    """`interpreter run ... | head -1`: the reader goes after one line; the job goes with it."""
    ticking = "import time\nfor i in range(200):\n    print(i, flush=True)\n    time.sleep(0.1)\n"
    before = {entry["job_id"] for entry in client.jobs(status="running")}
    with popen(server, "run", "-c", ticking) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"0\n"
        (job_id,) = {entry["job_id"] for entry in client.jobs(status="running")} - before
        proc.stdout.close()  # as `head -1` does after its line
        closed_at = time.monotonic()
        assert proc.wait(timeout=10) == 141
        assert time.monotonic() - closed_at < 5
        assert proc.stderr.read() == b""  # no traceback, no "Exception ignored"
    wait_status(client, job_id, "cancelled")


def test_input_files_go_in_and_the_jobs_files_come_out(
    server: ServerProcess, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    code = "open('out.txt', 'w').write(open('data/in.csv').read().upper())"
    result = run_json(server, "-c", code, "--file", f"{tmp_path / 'in.csv'}:data/in.csv")
    assert result["status"] == "completed", result
    job_id = result["job_id"]

    listing = cli(server, "files", job_id)
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[0] for line in listing.stdout.splitlines()] == [
        "PATH",
        "data/in.csv",
        "out.txt",
    ]
    files = json.loads(cli(server, "--json", "files", job_id).stdout)
    assert {entry["path"]: entry["size"] for entry in files} == {"data/in.csv": 8, "out.txt": 8}

    assert cli(server, "files", job_id, "out.txt").stdout == "A,B\n1,2\n"
    assert cli(server, "files", job_id, "out.txt", "-o", str(tmp_path / "o.txt")).returncode == 0
    assert (tmp_path / "o.txt").read_text() == "A,B\n1,2\n"
    archive = tmp_path / "out.tar.gz"
    assert cli(server, "files", job_id, "--archive", "-o", str(archive)).returncode == 0
    with tarfile.open(archive) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == [
            "data/in.csv",
            "out.txt",
        ]

    missing = cli(server, "files", job_id, "nope.txt")
    assert missing.returncode == 2
    assert one_line(missing.stderr).startswith("interpreter: ")


def test_piped_stdin_environment_and_stdin_file(server: ServerProcess, tmp_path: Path) -> None:
    done = cli(
        server, "run", "-l", "shell", "-c", 'tr a-z A-Z; echo "$WHO"', "--env", "WHO=me",
        input="hello\n",
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "HELLO\nme\n")
    (tmp_path / "stdin.txt").write_text("from a file\n")
    done = cli(
        server, "run", "-c", "print(input()[::-1])", "--stdin-file", str(tmp_path / "stdin.txt")
    )
    assert done.stdout == "elif a morf\n"


def test_json_prints_the_full_result(server: ServerProcess) -> None:
    done = cli(server, "run", "--json", "-c", "import sys; print('hi'); sys.exit(3)")
    assert done.returncode == 3
    result = json.loads(done.stdout)
    assert (result["status"], result["exit_code"], result["stdout"]) == ("failed", 3, "hi\n")
    assert result["termination_reason"] == "exit"
    assert "resource_usage" in result  # the whole GET /jobs/{id}/results body


def test_a_wrong_key_is_one_line_and_exit_2(server: ServerProcess) -> None:
    for args in (("run", "-c", "print(1)"), ("jobs", "list")):
        done = cli(server, "--api-key", "wrong", *args)
        assert done.returncode == 2
        assert done.stdout == ""
        assert one_line(done.stderr).startswith("interpreter: ")
    nowhere = cli(server, "--server", "http://127.0.0.1:9", "jobs", "list")
    assert nowhere.returncode == 2
    assert one_line(nowhere.stderr).startswith("interpreter: could not reach")


def test_usage_errors_are_one_line(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "x.rb").write_text("puts 1\n")
    for args in (
        ("run", str(tmp_path / "x.rb")),
        ("run", "-c", "1", "--file", str(tmp_path / "absent")),
        ("run", "-c", "1", "--env", "NOEQUALS"),
        ("run", "-c", "1", "-l", "cobol"),
    ):
        done = cli(server, *args)
        assert done.returncode == 2, args
        assert one_line(done.stderr).startswith("interpreter: "), args


# -- jobs --------------------------------------------------------------------------------------


def test_jobs_list_show_logs_and_cancel(server: ServerProcess, client: Client) -> None:
    job = client.submit(LONG)
    wait_status(client, job.id, "running")

    listed = json.loads(cli(server, "--json", "jobs", "list", "--status", "running").stdout)
    assert job.id in [entry["job_id"] for entry in listed]
    table = cli(server, "jobs", "list", "--limit", "5")
    assert table.stdout.splitlines()[0].split() == ["JOB", "STATUS", "LANGUAGE", "CREATED", "TIME"]
    assert any(line.startswith(f"{job.id}  running") for line in table.stdout.splitlines())
    shown = json.loads(cli(server, "jobs", "show", job.id, "--json").stdout)
    assert (shown["job_id"], shown["status"]) == (job.id, "running")

    with popen(server, "jobs", "logs", "--follow", job.id) as follow:
        assert follow.stdout is not None
        assert follow.stdout.readline() == b"started\n"
        cancelled = cli(server, "jobs", "cancel", job.id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert follow.wait(timeout=30) == 0  # the stream ended with the job

    assert "cancelled" in cli(server, "jobs", "show", job.id).stdout
    logs = cli(server, "jobs", "logs", job.id)
    assert (logs.returncode, logs.stdout) == (0, "started\n")
    again = cli(server, "jobs", "cancel", job.id)
    assert again.returncode == 2
    assert "already finished" in one_line(again.stderr)
    unknown = cli(server, "jobs", "show", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 2
    one_line(unknown.stderr)


# -- on a terminal -------------------------------------------------------------------------------

PROGRESS = re.compile(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] job [0-9a-f]{8}… (pending|running) \d+\.\d s")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw``: carriage returns, newlines and erase-line."""
    lines: list[str] = []
    line: list[str] = []
    col = 0
    i = 0
    while i < len(raw):
        if raw.startswith("\x1b[K", i):
            del line[col:]
            i += 3
            continue
        char = raw[i]
        i += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            lines.append("".join(line))
            line, col = [], 0
        else:
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
    if line:
        lines.append("".join(line))
    return lines


def read_terminal(master: int, proc: subprocess.Popen[bytes], deadline_s: float) -> bytes:
    data = bytearray()
    give_up_at = time.monotonic() + deadline_s
    while time.monotonic() < give_up_at:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError as exc:  # EIO: every end of the terminal's other side is closed
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    return bytes(data)


def test_on_a_terminal_a_progress_line_shows_and_is_erased(server: ServerProcess) -> None:
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [str(SCRIPT), "run", "-c", SLOW],
            env=cli_env(server, TERM="xterm"),
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        raw = read_terminal(master, proc, deadline_s=30).decode()
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(master)
        with contextlib.suppress(OSError):
            os.close(slave)

    assert PROGRESS.search(raw, raw.index("first")), raw  # shown while the job slept
    assert screen(raw) == ["first", "second"], raw  # erased, the output intact


def test_with_no_terminal_there_is_no_progress_line(server: ServerProcess) -> None:
    done = cli(server, "run", "-c", SLOW)
    assert (done.returncode, done.stdout, done.stderr) == (0, "first\nsecond\n", "")


# -- the other commands ----------------------------------------------------------------------------


def test_the_client_commands_work_without_the_servers_dependencies(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = blocked_env(
        tmp_path, INTERPRETER_URL=server.url, INTERPRETER_API_KEY=KEY, HOME=str(tmp_path)
    )
    done = cli(server, "run", "-c", "print(6 * 7)", env=env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "42\n", "")
    for command in ("serve", "worker"):
        done = cli(server, command, env=env)
        assert done.returncode == 2
        line = one_line(done.stderr)
        assert line.startswith(f"interpreter {command} needs the server's dependencies"), line
        assert "install interpreter-server[server]" in line


def test_mcp_without_its_module_says_so_in_one_line(server: ServerProcess) -> None:
    try:
        import interpreter.mcp.stdio  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("interpreter.mcp.stdio is installed: its own tests cover it")
    done = cli(server, "mcp")
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("interpreter mcp needs the MCP extra")


def test_version_and_help(server: ServerProcess) -> None:
    done = cli(server, "--version")
    assert done.returncode == 0
    assert re.fullmatch(r"interpreter \S+\n", done.stdout)
    helped = cli(server, "--help")
    for command in ("run", "jobs", "files", "environments", "serve", "worker", "mcp"):
        assert command in helped.stdout


def test_the_cli_imports_only_the_client_and_the_standard_library() -> None:
    """The server's entry points and the MCP bridge are imported inside their commands only."""
    lazy = {"interpreter.server", "interpreter.worker", "interpreter.mcp.stdio"}
    allowed = {"interpreter.client", "interpreter.extras", *lazy}
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / "interpreter" / "cli").glob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = {node.module}
            else:
                continue
            for name in names:
                ours = name.startswith("interpreter.cli") or name == "__future__"
                stdlib = name.partition(".")[0] in sys.stdlib_module_names
                if ours or stdlib:
                    continue
                if name not in allowed or (name in lazy and id(node) in top_level):
                    found.setdefault(path.name, set()).add(name)
    assert found == {}
