"""A real ``python -m interpreter.server`` process, and helpers to drive it over HTTP.

``ServerProcess.start()`` starts a server on a free port of 127.0.0.1 with a minimal environment
(PATH, HOME and ``INTERPRETER_*`` settings: its data directory lives in the test's tmp_path) and
waits for ``GET /health`` to answer 200. A ``ServerProcess`` can be stopped (SIGTERM, then SIGKILL
past a deadline), killed (SIGKILL) and started again on the same data directory. Whatever a test
does, ``cleanup()`` kills the server and every process of it ever seen (jobs included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from interpreter.sandbox.rundir import RunDir

REPO_ROOT = Path(__file__).resolve().parents[2]
FINAL_STATUSES = frozenset({"completed", "failed", "timeout", "cancelled"})
HEALTH_DEADLINE_S = 15.0
STOP_DEADLINE_S = 15.0
POLL_INTERVAL_S = 0.05
JOB_MARKER = "ACCEPTANCE_JOB"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-max_bytes:].decode("utf-8", errors="replace")


def kill_processes(procs: list[psutil.Process]) -> None:
    """SIGKILL those of ``procs`` still running and wait (briefly) until they are gone."""
    alive = [proc for proc in procs if running(proc)]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()  # psutil checks that the pid was not reused since we saw it
    survivors(alive, deadline_s=3.0)


DEFAULT_RUN_DIR = Path("/run/interpreter")  # INTERPRETER_SANDBOX_RUN_DIR's default


class ServerProcess:
    """One server: a process group of its own, logs in ``directory``, data in ``data_dir``."""

    def __init__(
        self, directory: Path, env: dict[str, str], module: str = "interpreter.server"
    ) -> None:
        self.module = module  # interpreter.worker: a worker process (no HTTP port of its own)
        self.directory = directory
        self.data_dir = directory / "data"
        self.workspace_root = directory / "workspaces"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stdout_path = directory / "server.stdout.log"
        self.stderr_path = directory / "server.stderr.log"
        self._clients: list[httpx.Client] = []
        self._seen: dict[int, psutil.Process] = {}  # every descendant ever seen, for teardown
        directory.mkdir(parents=True, exist_ok=True)

    # -- environment and clients ---------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.directory),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO_ROOT),  # the server of this tree, whatever is installed
            "INTERPRETER_HOST": "127.0.0.1",
            "INTERPRETER_PORT": str(self.port),
            "INTERPRETER_DATA_DIR": str(self.data_dir),
            "INTERPRETER_WORKSPACE_ROOT": str(self.workspace_root),
            "INTERPRETER_LOG_LEVEL": "INFO",
        }
        env.update(self.extra_env)
        return env

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client to this server only (no proxy from the environment), closed at the end."""
        kwargs.setdefault("timeout", 10.0)
        client = httpx.Client(base_url=self.url, trust_env=False, **kwargs)
        self._clients.append(client)
        return client

    @property
    def pid(self) -> int:
        assert self.popen is not None, "the server was never started"
        return self.popen.pid

    def log_tail(self) -> str:
        return (
            f"--- {self.stderr_path.name} ---\n{tail(self.stderr_path)}\n"
            f"--- {self.stdout_path.name} ---\n{tail(self.stdout_path)}"
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to be ready."""
        assert self.popen is None or self.popen.poll() is not None, "already running"
        self.starts += 1
        with (
            self.stdout_path.open("ab") as stdout,
            self.stderr_path.open("ab") as stderr,
        ):
            marker = f"=== start {self.starts} ===\n".encode()
            stdout.write(marker)
            stderr.write(marker)
            stdout.flush()
            stderr.flush()
            self.popen = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=self.directory,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        return self.popen

    def start(self) -> ServerProcess:
        """Start (or restart, on the same data directory and port) and wait for /health 200."""
        popen = self.spawn()
        deadline = time.monotonic() + HEALTH_DEADLINE_S
        last = "no answer yet"
        with httpx.Client(base_url=self.url, trust_env=False, timeout=1.0) as probe:
            while time.monotonic() < deadline:
                if popen.poll() is not None:
                    pytest.fail(
                        f"the server exited with {popen.returncode} before it was healthy\n"
                        + self.log_tail()
                    )
                try:
                    response = probe.get("/health")
                except httpx.HTTPError as exc:
                    last = repr(exc)
                else:
                    if response.status_code == 200:
                        return self
                    last = f"HTTP {response.status_code}: {response.text[:300]}"
                time.sleep(0.05)
        self.kill()
        pytest.fail(
            f"the server was not healthy within {HEALTH_DEADLINE_S:g} s ({last})\n"
            + self.log_tail()
        )

    def descendants(self) -> list[psutil.Process]:
        """The server's descendants now (its jobs live in sessions of their own)."""
        if self.popen is None or self.popen.poll() is not None:
            return []
        try:
            found = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.Error:
            return []
        for proc in found:
            self._seen.setdefault(proc.pid, proc)
        return found

    def stop(self, deadline_s: float = STOP_DEADLINE_S) -> float:
        """SIGTERM; SIGKILL the group past ``deadline_s``. Returns the seconds it took to exit."""
        popen = self.popen
        assert popen is not None
        self.descendants()
        started = time.monotonic()
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(deadline_s)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(
                    f"the server did not exit within {deadline_s:g} s of SIGTERM\n"
                    + self.log_tail()
                )
        return time.monotonic() - started

    def kill(self) -> list[psutil.Process]:
        """SIGKILL the server's process group. Returns its descendants seen just before."""
        popen = self.popen
        if popen is None:
            return []
        before = self.descendants()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5)
        return before

    def wait_exit(self, deadline_s: float) -> int:
        assert self.popen is not None
        try:
            return self.popen.wait(deadline_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the server still runs after {deadline_s:g} s\n" + self.log_tail())

    def track(self, procs: Iterable[psutil.Process]) -> None:
        """Kill these processes at teardown too (a job's processes found by the test)."""
        for proc in procs:
            self._seen.setdefault(proc.pid, proc)

    def cleanup(self) -> None:
        """Close clients, kill the group and every process of it ever seen (orphaned jobs too)."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        self.kill()
        kill_processes(list(self._seen.values()))


@contextlib.contextmanager
def running_server(directory: Path, **env: str) -> Iterator[ServerProcess]:
    """A healthy server for a block (a module-scoped fixture), cleaned up however it ends."""
    server = ServerProcess(directory, env)
    try:
        yield server.start()
    finally:
        server.cleanup()


# -- HTTP helpers ----------------------------------------------------------------------------------


def submit(client: httpx.Client, code: str, language: str = "python", **fields: Any) -> str:
    response = client.post("/execute", json={"code": code, "language": language, **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "pending", body
    return str(body["job_id"])


def run_in_one_trip(client: httpx.Client, code: str, wait_s: float = 30) -> dict[str, Any]:
    """``POST /execute?wait=``: the answer's body (the full result of a job that ended in time)."""
    response = client.post(
        "/execute",
        json={"code": code, "language": "python"},
        params={"wait": wait_s},
        timeout=wait_s + 10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def job_status(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}/status")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_status(
    client: httpx.Client, job_id: str, statuses: set[str] | frozenset[str], deadline_s: float
) -> dict[str, Any]:
    """Poll the job's status until it is one of ``statuses``; fail past the deadline."""
    give_up_at = time.monotonic() + deadline_s
    while True:
        body = job_status(client, job_id)
        if body["status"] in statuses:
            return body
        if time.monotonic() > give_up_at:
            pytest.fail(
                f"job {job_id} is {body['status']!r} after {deadline_s:g} s, "
                f"expected one of {sorted(statuses)}: {body}"
            )
        time.sleep(POLL_INTERVAL_S)


def wait_final(client: httpx.Client, job_id: str, deadline_s: float = 20.0) -> dict[str, Any]:
    return wait_for_status(client, job_id, FINAL_STATUSES, deadline_s)


def results(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}/results")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def live_directory(server: ServerProcess, job_id: str) -> Path:
    """Where the host sees a running job's working directory as the job does: its files land
    in the directory itself only when the job ends (the sandbox's capped filesystem)."""
    return RunDir(DEFAULT_RUN_DIR, server.data_dir).mounts / job_id


def wait_for_file(path: Path, deadline_s: float = 10.0) -> str:
    """The content of ``path`` once it exists with a complete (newline-ended) content."""
    give_up_at = time.monotonic() + deadline_s
    while time.monotonic() < give_up_at:
        with contextlib.suppress(OSError):
            text = path.read_text()
            if text.endswith("\n"):
                return text
        time.sleep(POLL_INTERVAL_S)
    pytest.fail(f"{path} was not written within {deadline_s:g} s")


def running(proc: psutil.Process) -> bool:
    """Whether the process we saw still runs (a zombie does not; a reused pid is not it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def new_marker() -> dict[str, str]:
    """Environment variables that mark every process of one job (children inherit them)."""
    return {JOB_MARKER: uuid.uuid4().hex}


def job_processes(
    environment: dict[str, str], expected: int, deadline_s: float = 5.0
) -> list[psutil.Process]:
    """The running processes marked by ``environment`` (see ``new_marker``), once ``expected``
    of them run. Found by their environment, not by the pids the job sees: those may live in
    a pid namespace of the job's own."""
    marker = environment[JOB_MARKER]
    give_up_at = time.monotonic() + deadline_s
    while True:
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(JOB_MARKER) == marker and running(proc):
                    found.append(proc)
        if len(found) >= expected:
            return found
        if time.monotonic() > give_up_at:
            pytest.fail(f"found {len(found)} processes of the job, expected {expected}: {found}")
        time.sleep(POLL_INTERVAL_S)


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())!r} ({proc.status()})"
    except psutil.Error:
        return f"{proc.pid} (gone)"


def survivors(procs: list[psutil.Process], deadline_s: float) -> list[str]:
    """Wait up to ``deadline_s`` until none of ``procs`` runs; describe those still running."""
    give_up_at = time.monotonic() + deadline_s
    while True:
        alive = [proc for proc in procs if running(proc)]
        if not alive or time.monotonic() > give_up_at:
            return [describe(proc) for proc in alive]
        time.sleep(POLL_INTERVAL_S)
