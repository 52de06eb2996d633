"""Hostile jobs against the sandboxed server, in python and shell (and node where it applies).

Each case goes through ``Attacker.attack`` (see conftest): final status in time, no secret shown,
no process left, the server still runs a control job. The assertions here say what the attack
itself must have found: nothing.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from interpreter.api.auth import owner_of
from interpreter.workspace import tenant_prefix
from tests.acceptance.server import live_directory, wait_final, wait_for_file, wait_for_status
from tests.security.conftest import API_KEY, ENV_SECRET, HOST_SECRET, Attacker, marked

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(90)]

MiB = 2**20


def run(attacker: Attacker, cases: dict[str, str], language: str, **fields: object) -> dict:
    if language not in cases:
        pytest.skip(f"no {language} variant of this attack")
    return attacker.attack(cases[language], language, **fields)


LANGUAGES = ["python", "shell", "javascript"]


# -- the host's files, environment and processes --------------------------------------------------
@pytest.mark.parametrize("language", LANGUAGES)
def test_reading_a_host_file_outside_the_workspace_fails(attacker: Attacker, language: str) -> None:
    path = attacker.secret_file
    cases = {
        "python": f"print(open({str(path)!r}).read())",
        "shell": f"cat {path}; ls -la {path.parent}",
        "javascript": f"console.log(require('fs').readFileSync({str(path)!r}, 'utf8'))",
    }
    body = run(attacker, cases, language)
    assert body["status"] == "failed"
    assert "No such file" in body["stderr"] or "ENOENT" in body["stderr"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_servers_environment_is_out_of_reach(attacker: Attacker, language: str) -> None:
    cases = {
        "python": (
            "import os\n"
            "for pid in os.listdir('/proc'):\n"
            "    if pid.isdigit():\n"
            "        for name in ('environ', 'cmdline'):\n"
            "            try:\n"
            "                print(pid, name, open(f'/proc/{pid}/{name}', 'rb').read())\n"
            "            except OSError as e:\n"
            "                print(pid, name, e)\n"
            "print(dict(os.environ))\n"
        ),
        "shell": "for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do\n"
        "  echo $f; cat $f; echo\ndone\nenv; ps aux 2>&1",
        "javascript": "const fs = require('fs');"
        " for (const p of fs.readdirSync('/proc').filter(p => /^\\d+$/.test(p)))"
        " { try { console.log(p, fs.readFileSync(`/proc/${p}/environ`, 'latin1')) }"
        " catch (e) { console.log(p, e.code) } }"
        " console.log(JSON.stringify(process.env))",
    }
    body = run(attacker, cases, language)
    assert body["status"] in ("completed", "failed")
    assert ENV_SECRET not in body["stdout"]
    assert "interpreter.server" not in body["stdout"]  # the server's processes are not listed
    assert "PYTHONPATH" not in body["stdout"]  # nothing of the server's environment


def test_only_the_jobs_own_processes_are_visible(attacker: Attacker) -> None:
    body = attacker.attack(
        "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    )
    assert body["stdout"] == "[1, 2]\n"  # bwrap's reaper and the job itself


def test_killing_every_process_it_can_see_leaves_the_server_alone(attacker: Attacker) -> None:
    code = (
        f"import os, signal\n"
        f"try:\n    os.kill({attacker.server.pid}, signal.SIGKILL)\n"
        f"except OSError as e:\n    print('server pid:', e.errno)\n"
        f"os.kill(-1, signal.SIGKILL)\n"
    )
    body = attacker.attack(code)
    assert "server pid: 3" in body["stdout"]  # ESRCH: not in its pid namespace
    assert attacker.server.popen is not None and attacker.server.popen.poll() is None


# -- network --------------------------------------------------------------------------------------
@pytest.fixture
def listeners() -> Iterator[dict[str, object]]:
    """A TCP and a UDP socket on 127.0.0.1 and an abstract unix socket, opened by the test."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"interpreter-test-{uuid.uuid4().hex}"
    abstract.bind("\0" + name)
    abstract.listen()
    tcp.setblocking(False)
    abstract.setblocking(False)
    try:
        yield {
            "tcp": tcp.getsockname()[1],
            "udp": udp.getsockname()[1],
            "abstract": name,
            "sockets": (tcp, udp, abstract),
        }
    finally:
        for sock in (tcp, udp, abstract):
            sock.close()


def assert_nothing_arrived(listeners: dict[str, object]) -> None:
    tcp, udp, abstract = listeners["sockets"]  # type: ignore[misc]
    for listening in (tcp, abstract):
        with pytest.raises(BlockingIOError):
            listening.accept()
    with pytest.raises(BlockingIOError):
        udp.recvfrom(100)


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_network_not_even_loopback_of_the_host(
    attacker: Attacker, listeners: dict[str, object], language: str
) -> None:
    tcp, udp, name = listeners["tcp"], listeners["udp"], listeners["abstract"]
    server_port = attacker.server.port
    cases = {
        "python": (
            "import socket\n"
            "print('interfaces', [n for _, n in socket.if_nameindex()])\n"
            f"for port in ({tcp}, {server_port}, 5432, 6379):\n"
            "    try:\n"
            "        socket.create_connection(('127.0.0.1', port), timeout=2)\n"
            "        print('CONNECTED', port)\n"
            "    except OSError as e:\n"
            "        print('tcp', port, e.errno)\n"
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"u.sendto(b'hello', ('127.0.0.1', {udp}))\n"
            "a = socket.socket(socket.AF_UNIX)\n"
            "try:\n"
            f"    a.connect('\\0{name}'); print('CONNECTED abstract')\n"
            "except OSError as e:\n"
            "    print('abstract', e.errno)\n"
        ),
        "shell": (
            f"for port in {tcp} {server_port} 5432 6379; do\n"
            "  (echo hi > /dev/tcp/127.0.0.1/$port) 2>/dev/null && echo CONNECTED $port"
            " || echo tcp $port refused\n"
            "done\n"
            f"echo hello > /dev/udp/127.0.0.1/{udp}\n"
        ),
        "javascript": (
            f"const s = require('net').connect({tcp}, '127.0.0.1');"
            " s.on('connect', () => console.log('CONNECTED'));"
            " s.on('error', e => console.log('tcp', e.code));"
        ),
    }
    body = run(attacker, cases, language)
    assert "CONNECTED" not in body["stdout"], body["stdout"]
    if language == "python":
        assert "interfaces ['lo']" in body["stdout"]
        assert f"tcp {tcp} 111" in body["stdout"]  # ECONNREFUSED: nobody listens in its namespace
        assert "abstract 111" in body["stdout"]
    assert_nothing_arrived(listeners)


# -- writes outside the workspace -----------------------------------------------------------------
@pytest.mark.parametrize("language", ["python", "shell"])
def test_writes_to_etc_usr_the_data_directory_and_host_files_fail(
    attacker: Attacker, language: str
) -> None:
    marker = uuid.uuid4().hex
    data_dir = attacker.server.data_dir
    targets = [
        f"/etc/{marker}",
        f"/usr/{marker}",
        f"/usr/bin/{marker}",
        f"/{marker}",
        str(data_dir / marker),
        str(data_dir / "jobs.sqlite3"),
        str(attacker.secret_file),
        str(attacker.host / "canary.txt"),
    ]
    cases = {
        "python": (
            f"for path in {targets!r}:\n"
            "    try:\n"
            "        open(path, 'a').write('pwned')\n"
            "        print('WROTE', path)\n"
            "    except OSError as e:\n"
            "        print('refused', path, e.errno)\n"
        ),
        "shell": "".join(f"echo pwned >> {t} && echo WROTE {t}\n" for t in targets),
    }
    before = (data_dir / "jobs.sqlite3").stat().st_size
    body = run(attacker, cases, language)
    for target in targets[:4]:
        assert not Path(target).exists()
    assert not (data_dir / marker).exists()
    # Whatever it "wrote" under the data directory's path went to its own, throwaway root.
    assert "pwned" not in (data_dir / "jobs.sqlite3").read_bytes().decode(errors="replace")
    assert (data_dir / "jobs.sqlite3").stat().st_size >= before
    for target in targets[:4]:
        assert f"WROTE {target}\n" not in body["stdout"]


def test_a_planted_symlink_is_never_followed_by_file_tracking(attacker: Attacker) -> None:
    code = (
        f"import os\nos.symlink({str(attacker.secret_file)!r}, 'leak.txt')\n"
        "os.symlink('/etc/shadow', 'shadow')\nos.symlink('/', 'root')\n"
    )
    body = attacker.attack(code)
    assert body["status"] == "completed"
    workspace = Path(body["working_directory"])
    assert sorted(body["files_created"]) == [
        str(workspace / "leak.txt"),
        str(workspace / "root"),
        str(workspace / "shadow"),
    ]
    assert os.readlink(workspace / "leak.txt") == str(attacker.secret_file)


@pytest.mark.parametrize("directory", ["../escape", "/etc", "a/../../escape", "symlink-out"])
def test_working_directory_cannot_leave_the_workspace_root(
    attacker: Attacker, directory: str
) -> None:
    # named directories live in the key's own part of the root: plant the link there
    root = attacker.server.workspace_root / tenant_prefix(owner_of(API_KEY))
    root.mkdir(parents=True, exist_ok=True)
    if directory == "symlink-out" and not (root / directory).is_symlink():
        (root / directory).symlink_to(attacker.host)
    response = attacker.client.post(
        "/execute", json={"code": "print(1)", "working_directory": directory}
    )
    assert response.status_code == 422


# -- resources ------------------------------------------------------------------------------------
@pytest.mark.parametrize("language", ["python", "shell"])
def test_fork_bomb_is_held_by_the_pids_limit(attacker: Attacker, language: str) -> None:
    cases = {
        "python": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
        "        pass",
        "shell": "bomb() { bomb | bomb & }; bomb",
    }
    body = run(attacker, cases, language, timeout=3, limits={"processes": 64})
    assert body["status"] in ("timeout", "completed", "failed")


@pytest.mark.parametrize("language", LANGUAGES)
def test_memory_bomb_ends_in_memory_limit(attacker: Attacker, language: str) -> None:
    cases = {
        "python": "a = []\nwhile True:\n    a.append(bytearray(8 * 2**20))",
        "shell": "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done",
        "javascript": "const a = []; while (true) a.push(Buffer.alloc(8 * 2 ** 20, 1));",
    }
    body = run(attacker, cases, language, limits={"memory_bytes": 128 * MiB}, timeout=20)
    assert body["termination_reason"] == "memory_limit", (body["error_message"], body["stderr"])
    assert body["error_message"] == "memory limit exceeded (128 MiB)"


@pytest.mark.parametrize("language", LANGUAGES)
def test_cpu_spin_without_output_ends_in_cpu_limit(attacker: Attacker, language: str) -> None:
    cases = {
        "python": "while True: pass",
        "shell": "while :; do :; done",
        "javascript": "while (true) {}",
    }
    body = run(attacker, cases, language, limits={"cpu_time_s": 1}, timeout=20)
    assert body["termination_reason"] == "cpu_limit"
    assert body["execution_time_ms"] < 5000


@pytest.mark.parametrize("language", ["python", "shell"])
def test_infinite_output_is_capped_and_ends_at_the_timeout(
    attacker: Attacker, language: str
) -> None:
    cases = {
        "python": "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)",
        "shell": "yes",
    }
    body = run(attacker, cases, language, timeout=2)
    assert body["status"] == "timeout"
    assert body["stdout_truncated"] is True
    assert len(body["stdout"]) < 2 * MiB


def test_filling_the_workspace_is_bounded(attacker: Attacker) -> None:
    code = "with open('fill', 'wb') as f:\n    while True:\n        f.write(b'x' * 2**20)"
    limits = {"workspace_bytes": 32 * MiB, "file_size_bytes": 64 * MiB}
    body = attacker.attack(code, limits=limits, timeout=20)
    # Killed at the next sample past 32 MiB, or stopped by the file size limit (EFBIG) first
    assert body["termination_reason"] in ("workspace_limit", "exit")
    assert Path(body["working_directory"], "fill").stat().st_size <= 64 * MiB


def test_filling_tmp_stops_at_its_size(attacker: Attacker) -> None:
    code = (
        "import errno\ntry:\n    with open('/tmp/fill', 'wb') as f:\n        while True:\n"
        "            f.write(b'x' * 2**20)\nexcept OSError as e:\n    print('stopped', e.errno)"
    )
    body = attacker.attack(code)
    assert body["stdout"] == "stopped 28\n"  # ENOSPC at the 64 MiB default


def test_a_hundred_thousand_files_stay_bounded(attacker: Attacker) -> None:
    code = (
        "import os\nos.mkdir('many')\n"
        "for i in range(100_000):\n    open(f'many/{i}', 'w').close()\nprint('done')"
    )
    body = attacker.attack(code, timeout=60)
    assert body["status"] == "completed" and body["stdout"] == "done\n"
    assert len(body["files_created"]) <= 100_000


# -- processes that try to outlive the job --------------------------------------------------------
DAEMON = {
    "python": (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(300)\n"
        "    os._exit(0)\n"
        "print('parent', flush=True)\n"
    ),
    "shell": "(setsid sleep 300 &) ; (nohup sleep 301 >/dev/null 2>&1 &) ; echo parent",
}


@pytest.mark.parametrize("language", ["python", "shell"])
def test_a_double_forked_daemon_dies_with_the_job_that_exits(
    attacker: Attacker, language: str
) -> None:
    body = attacker.attack(DAEMON[language], language)
    assert body["status"] == "completed"


@pytest.mark.parametrize("how", ["timeout", "cancel"])
@pytest.mark.parametrize("language", ["python", "shell"])
def test_timeout_and_cancel_kill_a_double_forked_daemon(
    attacker: Attacker, language: str, how: str
) -> None:
    code = DAEMON[language] + (
        "\nimport time\ntime.sleep(300)" if language == "python" else "; sleep 300"
    )
    job_id, marker = attacker.start(code, language, timeout=2 if how == "timeout" else 60)
    wait_for_status(attacker.client, job_id, {"running"}, deadline_s=10)
    deadline = 10.0
    while len(marked(marker)) < 2 and deadline > 0:  # the job and its daemon at least
        deadline -= 0.05
        time.sleep(0.05)
    if how == "cancel":
        assert attacker.client.post(f"/jobs/{job_id}/cancel").status_code == 200
    final = wait_final(attacker.client, job_id, deadline_s=20)
    assert final["status"] == ("timeout" if how == "timeout" else "cancelled")
    attacker.check(job_id, marker)


# -- privileges -----------------------------------------------------------------------------------
def test_ptrace_and_other_processes_memory_are_refused(attacker: Attacker) -> None:
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n"  # PTRACE_ATTACH
        "print('io_uring', libc.syscall(425, 1, 0), ctypes.get_errno())\n"
        "print('bpf', libc.syscall(321, 0, 0, 0), ctypes.get_errno())\n"
        "print('keyctl', libc.syscall(250, 0, 0), ctypes.get_errno())\n"
        "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"  # CLONE_NEWUSER
        "try:\n    open('/proc/1/mem', 'rb').read(1)\n"
        "except OSError as e:\n    print('mem', e.errno)\n"
    )
    body = attacker.attack(code)
    assert body["stdout"].splitlines()[:5] == [
        "ptrace -1 1",  # EPERM (seccomp)
        "io_uring -1 38",  # ENOSYS
        "bpf -1 1",
        "keyctl -1 1",
        "unshare -1 1",
    ], body["stdout"]


def test_setuid_binaries_and_mounts_give_nothing(attacker: Attacker) -> None:
    code = (
        "su -c id root </dev/null; echo su=$?\n"
        "mount -t tmpfs none /mnt 2>&1; echo mount=$?\n"
        "umount /tmp 2>&1; echo umount=$?\n"
        "id -u; grep -E 'NoNewPrivs|CapEff|Seccomp:' /proc/self/status\n"
    )
    body = attacker.attack(code, "shell")
    out = body["stdout"]
    assert "su=1" in out and "mount=0" not in out and "umount=0" not in out
    assert "65534\n" in out
    assert "NoNewPrivs:\t1" in out and "CapEff:\t0000000000000000" in out and "Seccomp:\t2" in out


def test_a_job_cannot_read_another_running_jobs_files(attacker: Attacker) -> None:
    other_secret = f"other-job-secret-{uuid.uuid4().hex}"
    tenant = attacker.server.workspace_root / tenant_prefix(owner_of(API_KEY))
    victim_dir = tenant / f"victim-{uuid.uuid4().hex}"
    victim, victim_marker = attacker.start(
        f"open('mine.txt', 'w').write({other_secret!r} + '\\n')\nimport time\ntime.sleep(30)",
        working_directory=victim_dir.name,
        timeout=30,
    )
    wait_for_status(attacker.client, victim, {"running"}, deadline_s=10)
    wait_for_file(live_directory(attacker.server, victim) / "mine.txt", deadline_s=10)
    code = (
        "import os\n"
        f"print(os.listdir({str(attacker.server.workspace_root)!r}))\n"
        f"try:\n    print(open({str(victim_dir / 'mine.txt')!r}).read())\n"
        "except OSError as e:\n    print('refused', e.errno)\n"
    )
    attacker.secrets = (*attacker.secrets, other_secret)
    try:
        body = attacker.attack(code)
    finally:
        attacker.secrets = attacker.secrets[:-1]
    assert "refused 2" in body["stdout"]
    assert victim_dir.name not in body["stdout"]  # it sees only its own directory there
    attacker.client.post(f"/jobs/{victim}/cancel")
    wait_final(attacker.client, victim)
    attacker.no_survivors(victim_marker)
    # a cancelled job is final at once; what it wrote lands in its directory a moment later
    assert wait_for_file(victim_dir / "mine.txt") == other_secret + "\n"


def test_the_api_key_is_nowhere_in_the_jobs_world(attacker: Attacker) -> None:
    code = (
        'grep -rsl -- "$KEY_PREFIX" /etc /tmp /dev/shm "$HOME" /proc/1/environ /proc/1/cmdline'
        " /proc/self/environ; echo searched"
    )
    body = attacker.attack(code, "shell", environment_variables={"KEY_PREFIX": "key-"})
    assert body["stdout"].endswith("searched\n")
    assert HOST_SECRET not in body["stdout"]
