"""The fault tier: the scale-out (API replicas and workers as real processes) on a PRIVATE
PostgreSQL that the tests stop and start at will (never the shared one at 127.0.0.1:5432).

``private_postgres`` (session-scoped) runs ``initdb`` once in a temporary directory and starts a
``postgres`` of its own on a free port of 127.0.0.1 (trust auth; ``fsync=off`` for speed, but
commits stay synchronous so that an immediate stop loses nothing committed), as an unprivileged
user when the tests run as root (``initdb`` refuses root). ``stop("fast")``,
``stop("immediate")`` and ``start()`` are an operator's outage. The server is stopped and its
directory removed at the end of the session, however it ends. Without PostgreSQL's binaries the
tier is skipped saying so (with ``CI`` set it fails instead).

``fault_cluster`` is ``tests.scaleout``'s ``Cluster`` on a fresh database of that server, with
``INTERPRETER_SANDBOX=none`` (these tests are about the queue: jobs write a ledger outside their
own directory) and short timings: heartbeat 0.5 s, a worker lost after 4 s, 3 s to get a
database connection from a pool. ``ledger`` is that file: each job appends ``start TOKEN PID``
when it starts and ``end TOKEN`` when it ends, so a test counts how many times each job ran.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil
import psycopg
import pytest

from tests.acceptance.server import tail
from tests.scaleout.conftest import Cluster

HEARTBEAT_S = 0.5
LOST_AFTER_S = 4.0
DATABASE_TIMEOUT_S = 3.0

StopMode = Literal["fast", "immediate"]


# -- the private PostgreSQL ----------------------------------------------------------------------


def _binaries() -> tuple[Path | None, str]:
    """The directory holding initdb, pg_ctl and postgres, or None and why not."""
    wanted = ("initdb", "pg_ctl", "postgres")
    configured = os.environ.get("INTERPRETER_TEST_PG_BIN")
    candidates = [configured] if configured else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)  # newest first
    for found in (shutil.which("pg_ctl"), shutil.which("initdb")):
        if found:
            candidates.append(str(Path(found).parent))
    for candidate in candidates:
        if all(os.access(Path(candidate) / name, os.X_OK) for name in wanted):
            return Path(candidate), ""
    return None, (
        "PostgreSQL's server binaries (initdb, pg_ctl, postgres) were not found in "
        "/usr/lib/postgresql/*/bin or on PATH (apt-get install postgresql, or set "
        "INTERPRETER_TEST_PG_BIN)"
    )


def _unprivileged_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as: ourselves unless root; then postgres (or nobody)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root, and no postgres or nobody user to run PostgreSQL as")


def _free_port() -> int:
    """A free port below the ephemeral range: no outgoing connection takes it while the server
    is stopped for an outage (it must come back on the same port)."""
    for _ in range(200):
        port = random.randrange(15000, 30000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for the private PostgreSQL")


class PrivatePostgres:
    """One PostgreSQL server of the tests' own: a data directory, a port, start and stop."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.user = _unprivileged_user()
        self.root = Path(tempfile.mkdtemp(prefix="interp-faults-pg-"))
        if self.user is not None:
            os.chown(self.root, *self.user)
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.commands_log = self.root / "commands.log"
        self.port = _free_port()
        self.stops: list[tuple[str, float]] = []  # (mode, seconds pg_ctl took), for reports

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[bytes]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        extra: dict[str, Any] = {}
        if self.user is not None:
            extra = {"user": self.user[0], "group": self.user[1], "extra_groups": []}
        with self.commands_log.open("ab") as out:
            out.write(f"$ {' '.join(command)}\n".encode())
            out.flush()
            done = subprocess.run(
                command,
                cwd=self.root,
                env={"PATH": "/usr/bin:/bin", "LANG": "C", "LC_ALL": "C"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run does not reach the server
                timeout=timeout_s,
                check=False,
                **extra,
            )
        return done

    def _fail(self, what: str) -> None:
        raise RuntimeError(
            f"private PostgreSQL: {what}\n--- commands ---\n{tail(self.commands_log, 2000)}\n"
            f"--- postgres.log ---\n{tail(self.log_path, 2000)}"
        )

    def init(self) -> None:
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8", "--no-locale",
        )  # fmt: skip
        if done.returncode != 0:
            self._fail(f"initdb exited with {done.returncode}")

    def start(self) -> None:
        """Start the server (on the same port every time) and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            # fsync off: fast, and safe as long as the machine itself does not crash. Commits
            # stay synchronous: an immediate stop must not lose a job whose id was returned.
            " -c fsync=off -c full_page_writes=off"
            " -c max_connections=300 -c shared_buffers=32MB"
        )
        done = self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log_path),
            "-w", "-t", "60", "-o", options,
        )  # fmt: skip
        if done.returncode != 0:
            self._fail(f"pg_ctl start exited with {done.returncode}")
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.admin_dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    self._fail(f"started but not accepting connections: {exc}")
                time.sleep(0.1)

    def stop(self, mode: StopMode) -> float:
        """``pg_ctl stop -m fast|immediate``: returns the seconds it took."""
        started = time.monotonic()
        done = self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")
        took = time.monotonic() - started
        if done.returncode != 0:
            self._fail(f"pg_ctl stop -m {mode} exited with {done.returncode}")
        self.stops.append((mode, took))
        return took

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and psutil.pid_exists(pid)

    def ensure_running(self) -> None:
        if not self.is_running():
            self.start()

    def destroy(self) -> None:
        """Stop the server whatever state it is in, then remove its directory. Idempotent."""
        if self.root.exists():
            pid = self.postmaster_pid()
            if pid is not None and psutil.pid_exists(pid):
                with contextlib.suppress(Exception):
                    self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w",
                              "-t", "20", timeout_s=30)  # fmt: skip
                if psutil.pid_exists(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)  # its backends exit when it is gone
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, max_bytes: int = 1500) -> str:
        return f"--- postgres.log ---\n{tail(self.log_path, max_bytes)}"

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[str]:
        """An empty database for one test: its URL; dropped (connections too) afterwards."""
        self.ensure_running()
        name = f"faults_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:{self.port}/{name}"
        finally:
            self.ensure_running()  # a test that failed mid-outage left it stopped
            with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir, why = _binaries()
    if bin_dir is None:
        if os.environ.get("CI"):  # CI installs PostgreSQL: never skip there
            pytest.fail(f"the fault tests must run in CI, but: {why}")
        pytest.skip(why)
    server = PrivatePostgres(bin_dir)
    atexit.register(server.destroy)  # even if the session's teardown never runs
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


# -- the cluster on it ----------------------------------------------------------------------------


class FaultCluster(Cluster):
    """A ``Cluster`` whose processes all run with the fault tier's settings."""

    def __init__(self, directory: Path, database_url: str, postgres: PrivatePostgres) -> None:
        super().__init__(directory, database_url)
        self.postgres = postgres
        self.env.update(
            {
                "INTERPRETER_SANDBOX": "none",
                "INTERPRETER_WORKER_HEARTBEAT": str(HEARTBEAT_S),
                "INTERPRETER_WORKER_LOST_AFTER": str(LOST_AFTER_S),
                "INTERPRETER_DATABASE_TIMEOUT": str(DATABASE_TIMEOUT_S),
                "INTERPRETER_RATE_LIMIT": "100000/minute",
                "INTERPRETER_DEFAULT_TIMEOUT": "60",
            }
        )

    def logs(self, max_bytes: int = 2500) -> str:
        """The end of every process's stderr, and of PostgreSQL's log."""
        parts = []
        for process in self.processes:
            state = "never started"
            if process.popen is not None:
                code = process.popen.poll()
                state = "running" if code is None else f"exited with {code}"
            parts.append(
                f"--- {process.directory.name} ({process.module}, {state}) stderr, "
                f"without access logs and job progress ---\n"
                f"{_notable(process.stderr_path, max_bytes)}"
            )
        parts.append(self.postgres.log_tail(max_bytes))
        return "\n".join(parts)

    def owner_of(self, pid: int) -> int | None:
        """Index of the worker whose process tree holds ``pid`` now (None: none of them)."""
        for index, worker in enumerate(self.workers):
            if pid in {proc.pid for proc in worker.descendants()}:
                return index
        return None


@pytest.fixture
def fault_cluster(tmp_path: Path, private_postgres: PrivatePostgres) -> Iterator[FaultCluster]:
    private_postgres.ensure_running()
    with private_postgres.fresh_database() as url:
        cluster = FaultCluster(tmp_path, url, private_postgres)
        try:
            yield cluster
        finally:
            for process in cluster.processes:  # a paused process must not survive a failure
                if process.popen is not None and process.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.popen.pid, signal.SIGCONT)
            cluster.cleanup()


def _notable(path: Path, max_bytes: int) -> str:
    """The end of a log without its routine lines (requests answered below 500, jobs starting
    and ending normally): what went wrong stays in view."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    kept = [
        line
        for line in lines
        if not (
            ('"logger": "interpreter.access"' in line and '"status": 5' not in line)
            or '"msg": "job pending"' in line
            or '"msg": "job running"' in line
            or '"msg": "job completed"' in line
        )
    ]
    return "\n".join(kept)[-max_bytes:]


# -- the ledger ------------------------------------------------------------------------------------


@dataclass
class Runs:
    starts: list[int]  # the pid of each start
    ends: int


class Ledger:
    """A world-writable file every job appends to when it starts and when it ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        path.chmod(0o666)  # jobs run as the workers' user (sandbox off): writable by any

    @staticmethod
    def token() -> str:
        return f"T{uuid.uuid4().hex[:16]}"

    def code(self, token: str, sleep_s: float) -> str:
        """Shell code: ``start TOKEN PID``, sleep, ``end TOKEN``; prints ``out TOKEN PID``."""
        ledger = str(self.path)
        return (
            f"echo \"start {token} $$\" >> '{ledger}'\n"
            f"sleep {sleep_s:g}\n"
            f"echo \"end {token}\" >> '{ledger}'\n"
            f'echo "out {token} $$"\n'
        )

    def runs(self) -> dict[str, Runs]:
        found: dict[str, Runs] = {}
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            runs = found.setdefault(parts[1], Runs([], 0))
            if parts[0] == "start" and len(parts) == 3:
                runs.starts.append(int(parts[2]))
            elif parts[0] == "end":
                runs.ends += 1
        return found

    def of(self, token: str) -> Runs:
        return self.runs().get(token, Runs([], 0))

    def wait_starts(self, token: str, count: int, deadline_s: float) -> list[int] | None:
        """The pids of the token's first ``count`` starts once there are that many, else None."""
        give_up_at = time.monotonic() + deadline_s
        while time.monotonic() < give_up_at:
            starts = self.of(token).starts
            if len(starts) >= count:
                return starts
            time.sleep(0.05)
        return None


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger" / "runs.log")
