"""Regression tests of the hardening issue: what a job could reach or use because, on the host,
it ran as the server's own user (root here); what one API key reached of another's; and what the
API showed or allowed on the side.

Each case goes through ``Attacker.attack`` or ``Attacker.check`` (see conftest): final status in
time, no secret shown, no process left, the server still runs a control job. Cases that start a
server of their own run a control job on it too.

Every attack is bounded so that a broken sandbox fails a test, never the machine: nothing here
writes a value to a sysctl (files are opened for writing and closed unwritten, which already
proves the hole), loops end by count and by time, disk writes stop at 48 MiB, and the only
traffic is to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.acceptance.server import (
    HEALTH_DEADLINE_S,
    ServerProcess,
    results,
    running_server,
    submit,
    wait_final,
    wait_for_status,
)
from tests.sandbox.usable import UNUSABLE
from tests.security.conftest import API_KEY, Attacker, marked

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

MiB = 2**20
LANGUAGES = ["python", "shell", "javascript"]


def run(attacker: Attacker, cases: dict[str, str], language: str, **fields: Any) -> dict[str, Any]:
    if language not in cases:
        pytest.skip(f"no {language} variant of this attack")
    return attacker.attack(cases[language], language, **fields)


def lines_starting(stdout: str, word: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line.split()[:1] == [word]]


# -- 1. /proc: host sysctls and root-only files -----------------------------------------------
SYSCTLS = [
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/vm/drop_caches",
    "/proc/sys/kernel/pid_max",
    "/proc/sys/vm/panic_on_oom",
]
REFUSED = {"python": {"1", "13", "30"}, "javascript": {"EPERM", "EACCES", "EROFS"}}
REFUSED_SHELL = ("Operation not permitted", "Permission denied", "Read-only file system")

# Opened for writing and closed without a write: no value is ever changed.
OPEN_FOR_WRITING = {
    "python": (
        "import os\n"
        f"for path in {SYSCTLS!r}:\n"
        "    try:\n"
        "        fd = os.open(path, os.O_WRONLY)\n"
        "    except OSError as e:\n"
        "        print('refused', path, e.errno)\n"
        "    else:\n"
        "        os.close(fd)\n"
        "        print('OPENED', path)\n"
    ),
    # `: >>` opens with O_APPEND and writes nothing
    "shell": "".join(
        f"if err=$( {{ : >> {path}; }} 2>&1 ); then echo OPENED {path};"
        f' else echo "refused {path} $err"; fi\n'
        for path in SYSCTLS
    ),
    "javascript": (
        "const fs = require('fs');\n"
        f"for (const p of {SYSCTLS!r}) {{\n"
        "  try { fs.closeSync(fs.openSync(p, fs.constants.O_WRONLY)); console.log('OPENED', p); }\n"
        "  catch (e) { console.log('refused', p, e.code); }\n"
        "}\n"
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_sysctls_cannot_be_opened_for_writing(attacker: Attacker, language: str) -> None:
    body = run(attacker, OPEN_FOR_WRITING, language)
    stdout = body["stdout"]
    assert "OPENED" not in stdout, stdout
    refused = {line[1]: line[2:] for line in lines_starting(stdout, "refused")}
    assert sorted(refused) == sorted(SYSCTLS), stdout
    for path, why in refused.items():
        if language == "shell":
            assert any(reason in " ".join(why) for reason in REFUSED_SHELL), (path, why)
        else:
            assert why and why[0] in REFUSED[language], (path, why)


def test_no_file_under_proc_sys_can_be_opened_for_writing(attacker: Attacker) -> None:
    code = (
        "import os, time\n"
        "give_up = time.monotonic() + 10\n"
        "seen, writable = 0, []\n"
        "for root, dirs, files in os.walk('/proc/sys'):\n"
        "    for name in files:\n"
        "        seen += 1\n"
        "        path = os.path.join(root, name)\n"
        "        try:\n"
        "            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)\n"
        "        except OSError:\n"
        "            continue\n"
        "        os.close(fd)\n"  # never written: opening is the hole
        "        writable.append(path)\n"
        "    if seen > 20000 or time.monotonic() > give_up:\n"
        "        print('walk cut short')\n"
        "        break\n"
        "print('seen', seen)\n"
        "print('writable', len(writable))\n"
        "print('\\n'.join(writable[:10]))\n"
    )
    body = attacker.attack(code, timeout=20)
    assert body["status"] == "completed", body["stderr"]
    assert "walk cut short" not in body["stdout"]
    assert lines_starting(body["stdout"], "writable") == [["writable", "0"]], body["stdout"]


# Root-only, or hidden by container runtimes: each must read empty or refuse
MASKED = [
    "keys",
    "timer_list",
    "kpageflags",
    "kpagecount",
    "kpagecgroup",
    "slabinfo",
    "vmallocinfo",
    "pagetypeinfo",
    "sched_debug",
    "kcore",
    "sysrq-trigger",
    "latency_stats",
    "mtrr",
    "interrupts",
]
READ_MASKED = {
    "python": (
        "import os\n"
        f"for name in {MASKED!r}:\n"
        "    path = '/proc/' + name\n"
        "    if not os.path.lexists(path):\n"
        "        print('absent', name)\n"
        "        continue\n"
        "    try:\n"
        "        with open(path, 'rb') as f:\n"
        "            print('read', name, len(f.read(4096)))\n"
        "    except OSError as e:\n"
        "        print('refused', name, e.errno)\n"
    ),
    "shell": "".join(
        f"if [ -e /proc/{name} ]; then"
        f" n=$(head -c 4096 /proc/{name} 2>/dev/null | wc -c); echo read {name} $n;"
        f" else echo absent {name}; fi\n"
        for name in MASKED
    ),
}


@pytest.mark.parametrize("language", ["python", "shell"])
def test_masked_proc_files_read_as_empty_or_refuse(attacker: Attacker, language: str) -> None:
    body = run(attacker, READ_MASKED, language)
    stdout = body["stdout"]
    shown = {words[1]: words for words in (line.split() for line in stdout.splitlines())}
    assert sorted(shown) == sorted(MASKED), stdout
    leaking = [name for name, line in shown.items() if line[0] == "read" and line[2] != "0"]
    assert leaking == [], f"these read non-empty: {leaking}\n{stdout}"


# -- 2. working_directory swapped for a symlink to / while the server looks at it -------------
RACE_BUDGET_S = 25.0
RACE_ATTEMPTS = 30
RACE_BATCH = 3


def swapper(duration_s: float) -> str:
    """Swap ``d`` (a directory) and ``l`` (a relative symlink to /) as fast as it can, until
    50 million swaps or ``duration_s`` have passed."""
    up = "/".join([".."] * 64)
    return (
        "import ctypes, os, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "L = ctypes.c_long\n"
        "os.mkdir('d')\n"
        "open('d/inside', 'w').close()\n"
        f"os.symlink({up!r}, 'l')\n"
        "print('ready', flush=True)\n"
        f"give_up = time.monotonic() + {duration_s}\n"
        "swaps = 0\n"
        "while swaps < 50_000_000 and time.monotonic() < give_up:\n"
        "    for _ in range(1000):\n"  # renameat2(AT_FDCWD, d, AT_FDCWD, l, RENAME_EXCHANGE)
        "        libc.syscall(L(316), L(-100), b'd', L(-100), b'l', L(2))\n"
        "    swaps += 1000\n"
        "print('swaps', swaps, flush=True)\n"
    )


def race(attacker: Attacker, directory: str, probe: str) -> tuple[list[str], list[str]]:
    """Submit ``probe`` in ``directory`` up to RACE_ATTEMPTS times within RACE_BUDGET_S,
    RACE_BATCH at a time; returns what became of each attempt and the markers of those that ran."""
    outcomes: list[str] = []
    markers: list[str] = []
    # A connection of its own: the server may drop one after an error
    submitter = attacker.server.client(headers={"X-API-Key": API_KEY})
    give_up = time.monotonic() + RACE_BUDGET_S
    while len(outcomes) < RACE_ATTEMPTS and time.monotonic() < give_up:
        batch: list[str] = []
        for _ in range(RACE_BATCH):
            marker = uuid.uuid4().hex
            request = {
                "code": probe,
                "working_directory": directory,
                "capture_files": False,
                "timeout": 10,
                "environment_variables": {"SECURITY_JOB": marker},
            }
            try:
                response = submitter.post("/execute", json=request)
            except httpx.TransportError as exc:
                outcomes.append(f"refused 5xx: the connection failed ({exc!r})")
                submitter = attacker.server.client(headers={"X-API-Key": API_KEY})
                continue
            if response.status_code != 200:
                outcomes.append(f"refused {response.status_code}: {response.text[:200]}")
                if response.status_code != 422:  # the server may drop this connection now
                    submitter = attacker.server.client(headers={"X-API-Key": API_KEY})
                continue
            batch.append(response.json()["job_id"])
            markers.append(marker)
        for job_id in batch:
            wait_final(attacker.client, job_id, deadline_s=20)
            body = results(attacker.client, job_id)
            outcomes.append(f"{body['status']} {body['termination_reason']}: {body['stdout']!r}")
    return outcomes, markers


def test_a_working_directory_swapped_for_a_symlink_never_exposes_the_host(
    attacker: Attacker, tmp_path: Path
) -> None:
    canary = tmp_path / "race-canary.txt"
    canary.write_text("unchanged\n")
    canary_from_root = str(canary).lstrip("/")
    directory = f"race-{uuid.uuid4().hex[:8]}"
    swapping, swapping_marker = attacker.start(
        swapper(RACE_BUDGET_S + 15),
        working_directory=directory,
        capture_files=False,
        timeout=RACE_BUDGET_S + 30,
    )
    wait_for_status(attacker.client, swapping, {"running"}, deadline_s=10)
    time.sleep(0.5)  # the directory and the link exist by now
    probe = (
        "import os\n"
        "print('listing', sorted(os.listdir('.'))[:20])\n"
        f"host = os.path.exists('etc/shadow') or os.path.exists({canary_from_root!r})\n"
        "print('host', host)\n"
        f"if os.path.exists({canary_from_root!r}):\n"
        f"    open({canary_from_root!r}, 'a').write('pwned by a job\\n')\n"
    )
    try:
        outcomes, markers = race(attacker, f"{directory}/d", probe)
    except BaseException:
        with contextlib.suppress(httpx.HTTPError):
            attacker.client.post(f"/jobs/{swapping}/cancel")
        raise
    assert attacker.client.post(f"/jobs/{swapping}/cancel").status_code in (200, 409)
    wait_final(attacker.client, swapping, deadline_s=20)

    exposed = [o for o in outcomes if "host True" in o or "'etc'" in o]
    assert exposed == [], f"{len(exposed)} of {len(outcomes)} attempts saw the host: {exposed[0]}"
    assert canary.read_text() == "unchanged\n"
    for outcome in outcomes:  # never a server error
        assert not outcome.startswith("refused 5"), outcome
    # Refused, or run in the real directory (holding what the swapping job made there, or
    # nothing yet where a job's changes reach the directory when it ends), or failed saying why
    in_the_directory = ("completed exit: \"listing ['inside']", "completed exit: 'listing []")
    for outcome in outcomes:
        assert (
            outcome.startswith(("refused 422", *in_the_directory)) or " sandbox_error: " in outcome
        ), outcome
    for marker in markers:
        attacker.no_survivors(marker)
    attacker.check(swapping, swapping_marker)


# -- 3. tenants: named working directories belong to one API key ------------------------------
LIST_READ_WRITE = (
    "import os\n"
    "print(sorted(os.listdir('.')))\n"
    "for name in sorted(os.listdir('.')):\n"
    "    try:\n"
    "        print(name, open(name).read())\n"
    "    except OSError as e:\n"
    "        print(name, e.errno)\n"
    "open('b.txt', 'w').write('written by the other tenant')\n"
)


def tenant_a_writes(attacker: Attacker, secret: str, **fields: Any) -> dict[str, Any]:
    code = f"open('a.txt', 'w').write({secret!r})\n"
    body = attacker.attack(code, **fields)
    assert body["status"] == "completed", body["stderr"]
    return body


def test_another_key_naming_a_job_id_gets_its_own_empty_directory(attacker: Attacker) -> None:
    secret = f"tenant-a-secret-{uuid.uuid4().hex}"
    mine = tenant_a_writes(attacker, secret)
    other = attacker.as_other_tenant().attack(LIST_READ_WRITE, working_directory=mine["job_id"])
    assert secret not in other["stdout"], "the other key read tenant A's file"
    assert other["status"] == "completed", other["stderr"]
    assert other["stdout"].splitlines()[0] == "[]", other["stdout"]
    own = Path(mine["working_directory"])
    assert sorted(p.name for p in own.iterdir()) == ["a.txt"]  # B's file is not in A's
    assert (own / "a.txt").read_text() == secret


def test_another_key_naming_a_directory_gets_its_own_empty_directory(attacker: Attacker) -> None:
    secret = f"tenant-a-secret-{uuid.uuid4().hex}"
    name = f"shared-{uuid.uuid4().hex[:8]}"
    tenant_a_writes(attacker, secret, working_directory=name)
    other = attacker.as_other_tenant().attack(LIST_READ_WRITE, working_directory=name)
    assert secret not in other["stdout"], "the other key read tenant A's file"
    assert other["status"] == "completed", other["stderr"]
    assert other["stdout"].splitlines()[0] == "[]", other["stdout"]
    again = attacker.attack(
        "import os\nprint(sorted(os.listdir('.')))\nprint(open('a.txt').read())",
        working_directory=name,
    )
    assert again["stdout"] == f"['a.txt']\n{secret}\n", "what the other key wrote shows for A"


# -- 4. the workspace limit's blind spots -----------------------------------------------------
WORKSPACE_LIMIT = 8 * MiB
WORKSPACE_SLACK = 4 * MiB
FILL_MAX = 48 * MiB

# Write up to 48 MiB in 1 MiB steps, saying how far it got; then keep the file open a while
FILL_PY = (
    "import os, time\n"
    "def fill(fd):\n"
    "    written, chunk = 0, b'x' * 2**20\n"
    "    try:\n"
    f"        while written < {FILL_MAX}:\n"
    "            written += os.write(fd, chunk)\n"
    "            print('wrote', written, flush=True)\n"
    "    except OSError as e:\n"
    "        print('stopped', e.errno, flush=True)\n"
    "    time.sleep(3)\n"
)
FILL_SH = (
    "fill() {\n"
    f"  i=0; while [ $i -lt {FILL_MAX // MiB} ]; do\n"
    "    head -c 1048576 /dev/zero >&3 || { echo stopped; break; }\n"
    "    i=$((i+1)); echo wrote $((i*1048576))\n"
    "  done; sleep 3\n"
    "}\n"
)
OPEN_PY = "os.open('{}', os.O_WRONLY | os.O_CREAT, 0o644)"
DEEP = {  # 25 levels of 200-character names: the file lies past PATH_MAX from the root
    "python": FILL_PY
    + "for _ in range(25):\n    os.mkdir('d' * 200)\n    os.chdir('d' * 200)\n"
    + f"fill({OPEN_PY.format('big')})\n",
    "shell": FILL_SH
    + 'n=$(printf "d%.0s" $(seq 200))\n'
    + "for i in $(seq 25); do mkdir $n && cd $n || exit 1; done\n"
    + "exec 3>big\nfill\n",
}
UNLINKED = {
    "python": FILL_PY + f"fd = {OPEN_PY.format('big')}\nos.unlink('big')\nfill(fd)\n",
    "shell": FILL_SH + "exec 3>big\nrm big\nfill\n",
}
MANY_FILES = {  # the big file in the directory whose listing stops a bounded walk
    "python": FILL_PY
    + "os.mkdir('many')\n"
    + "for i in range(100_001):\n"
    + "    os.close(os.open(f'many/{i}', os.O_WRONLY | os.O_CREAT, 0o644))\n"
    + "print('files created', flush=True)\n"
    + f"fill({OPEN_PY.format('many/big')})\n",
}


def written(stdout: str) -> int:
    return max((int(line[1]) for line in lines_starting(stdout, "wrote")), default=0)


def assert_workspace_limit(body: dict[str, Any]) -> None:
    got = written(body["stdout"])
    assert body["termination_reason"] == "workspace_limit", (
        f"ended {body['status']} ({body['termination_reason']}) after writing {got} bytes "
        f"with a workspace limit of {WORKSPACE_LIMIT}"
    )
    assert got <= WORKSPACE_LIMIT + WORKSPACE_SLACK, f"wrote {got} bytes"


@pytest.mark.parametrize("language", ["python", "shell"])
def test_a_file_past_path_max_counts_against_the_workspace_limit(
    attacker: Attacker, language: str
) -> None:
    body = run(attacker, DEEP, language, limits={"workspace_bytes": WORKSPACE_LIMIT}, timeout=20)
    assert_workspace_limit(body)


@pytest.mark.parametrize("language", ["python", "shell"])
def test_an_unlinked_open_file_counts_against_the_workspace_limit(
    attacker: Attacker, language: str
) -> None:
    limits = {"workspace_bytes": WORKSPACE_LIMIT}
    body = run(attacker, UNLINKED, language, limits=limits, timeout=20)
    assert_workspace_limit(body)


def test_a_big_file_behind_a_hundred_thousand_empty_files_counts_against_the_workspace_limit(
    attacker: Attacker,
) -> None:
    limits = {"workspace_bytes": WORKSPACE_LIMIT}
    body = run(attacker, MANY_FILES, "python", limits=limits, timeout=60)
    assert_workspace_limit(body)


# -- 5. kernel surface --------------------------------------------------------------------------
SYSCALL_PY = (
    "import ctypes, os, socket\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.syscall.restype = ctypes.c_long\n"
    "def call(*args):\n"
    "    ctypes.set_errno(0)\n"
    "    result = libc.syscall(*args)\n"
    "    return result, ctypes.get_errno() if result < 0 else 0\n"
    "L = ctypes.c_long\n"
)


def test_pidfd_getfd_cannot_take_the_sandbox_init_descriptors(attacker: Attacker) -> None:
    code = SYSCALL_PY + (
        "pidfd, err = call(L(434), L(1), L(0))\n"  # pidfd_open(1, 0)
        "if pidfd < 0:\n"
        "    print('pidfd_open', err)\n"
        "else:\n"
        "    for fd in range(21):\n"
        "        got, err = call(L(438), L(pidfd), L(fd), L(0))\n"  # pidfd_getfd
        "        if got >= 0:\n"
        "            print('GOT', fd, os.readlink(f'/proc/self/fd/{got}'))\n"
        "            os.close(got)\n"
        "        else:\n"
        "            print('getfd', fd, err)\n"
    )
    body = attacker.attack(code)
    stdout = body["stdout"]
    assert "GOT" not in stdout, stdout
    getfd = lines_starting(stdout, "getfd")
    assert getfd or lines_starting(stdout, "pidfd_open"), stdout
    assert {line[2] for line in getfd} <= {"1"}, stdout  # EPERM, never EBADF


PERSONALITY = {
    "python": SYSCALL_PY
    + "print('personality', *call(L(135), L(0x0040000)))\n",  # ADDR_NO_RANDOMIZE
    "shell": 'setarch "$(uname -m)" -R true; echo rc=$?\n',
}


@pytest.mark.parametrize("language", ["python", "shell"])
def test_personality_cannot_turn_off_address_randomization(
    attacker: Attacker, language: str
) -> None:
    body = run(attacker, PERSONALITY, language)
    if language == "python":
        assert body["stdout"] == "personality -1 1\n", body["stdout"]
    else:
        assert "rc=0" not in body["stdout"], body["stdout"]
        assert "Operation not permitted" in body["stderr"], body["stderr"]


def test_vsock_and_alg_sockets_cannot_be_created(attacker: Attacker) -> None:
    code = (
        "import socket\n"
        "for family, kind in ((40, socket.SOCK_STREAM), (38, socket.SOCK_SEQPACKET)):\n"
        "    try:\n"
        "        socket.socket(family, kind).close()\n"
        "        print('CREATED', family)\n"
        "    except OSError as e:\n"
        "        print('refused', family, e.errno)\n"
    )
    body = attacker.attack(code)
    assert "CREATED" not in body["stdout"], body["stdout"]
    assert [line[1] for line in lines_starting(body["stdout"], "refused")] == ["40", "38"]


def test_open_tree_attr_is_refused(attacker: Attacker) -> None:
    code = SYSCALL_PY + (
        # open_tree_attr(AT_FDCWD, ".", 0, NULL, 0): without OPEN_TREE_CLONE an O_PATH open
        "fd, err = call(L(467), L(-100), ctypes.c_char_p(b'.'), L(0), L(0), L(0))\n"
        "if fd >= 0:\n"
        "    os.close(fd)\n"
        "print('open_tree_attr', fd, err)\n"
    )
    body = attacker.attack(code)
    assert body["stdout"] in ("open_tree_attr -1 1\n", "open_tree_attr -1 38\n"), body["stdout"]


# -- 6. the API -------------------------------------------------------------------------------
def test_a_cursor_too_large_for_the_database_is_a_422(attacker: Attacker) -> None:
    response = attacker.client.get("/jobs", params={"cursor": "9" * 26})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"]
    attacker.control()


def test_the_sandbox_description_needs_a_key_and_shows_no_host_cgroup_path(
    attacker: Attacker,
) -> None:
    anonymous = attacker.server.client().get("/sandbox")
    assert anonymous.status_code == 401, anonymous.text[:300]
    response = attacker.client.get("/sandbox")
    assert response.status_code == 200, response.text
    assert "/sys/fs/cgroup" not in response.text, response.text
    attacker.control()


@pytest.mark.parametrize("directory", ["../escape", "/etc", "a/../../escape", "/"])
def test_working_directory_errors_do_not_show_the_servers_paths(
    attacker: Attacker, directory: str
) -> None:
    response = attacker.client.post(
        "/execute", json={"code": "print(1)", "working_directory": directory}
    )
    assert response.status_code == 422, response.text
    server = attacker.server
    for path in {server.directory, server.data_dir, server.workspace_root}:
        for shown in {str(path), os.path.realpath(path)}:
            assert shown not in response.text, response.text
    attacker.control()


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"code": 5, "language": []}'], ids=["unparsable", "invalid"]
)
def test_a_bad_body_without_a_key_is_a_401(attacker: Attacker, content: bytes) -> None:
    anonymous = attacker.server.client()
    response = anonymous.post(
        "/execute", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401, response.text
    attacker.control()


@pytest.mark.parametrize("processes", [1, 2])
def test_too_few_processes_for_any_job_are_refused_saying_the_minimum(
    attacker: Attacker, processes: int
) -> None:
    response = attacker.client.post(
        "/execute", json={"code": "print(1)", "limits": {"processes": processes}}
    )
    if response.status_code == 200:  # say what became of the job it accepted
        job_id = response.json()["job_id"]
        wait_final(attacker.client, job_id)
        body = results(attacker.client, job_id)
        pytest.fail(
            f"limits.processes={processes} was accepted; the job ended {body['status']} "
            f"({body['termination_reason']}): {body['error_message'] or body['stderr'][:200]}"
        )
    assert response.status_code == 422, response.text
    assert "limits.processes" in response.text and "at least" in response.text, response.text
    attacker.control()


def control(client: httpx.Client) -> None:
    job_id = submit(client, "print('control')")
    assert wait_final(client, job_id)["status"] == "completed"
    assert client.get(f"/results/{job_id}").json()["stdout"] == "control\n"


@pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox here: {UNUSABLE}")
def test_api_keys_without_the_auth_switch_do_not_leave_the_server_open(tmp_path: Path) -> None:
    key = f"key-{uuid.uuid4().hex}"
    server = ServerProcess(
        tmp_path / "keys-only", {"INTERPRETER_SANDBOX": "bwrap", "INTERPRETER_API_KEYS": key}
    )
    try:
        popen = server.spawn()
        give_up = time.monotonic() + HEALTH_DEADLINE_S
        with httpx.Client(base_url=server.url, trust_env=False, timeout=1.0) as probe:
            while popen.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    if probe.get("/health").status_code == 200:
                        break
                assert time.monotonic() < give_up, (
                    "neither healthy nor exited\n" + server.log_tail()
                )
                time.sleep(0.05)
        if popen.poll() is not None:  # it refused to start: say why, and not with a traceback
            assert popen.returncode != 0
            return
        anonymous = server.client()
        assert anonymous.get("/jobs").status_code == 401
        refused = anonymous.post("/execute", json={"code": "print('open to anyone')"})
        assert refused.status_code == 401, refused.text
        control(server.client(headers={"X-API-Key": key}))
    finally:
        server.cleanup()


@pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox here: {UNUSABLE}")
def test_retention_deletes_a_workspace_nested_1200_levels_deep(tmp_path: Path) -> None:
    code = (
        "import os\n"
        "for _ in range(1200):\n    os.mkdir('d')\n    os.chdir('d')\n"
        "open('leaf', 'w').write('deep')\nprint('nested')\n"
    )
    workspace: Path | None = None
    with running_server(
        tmp_path / "retention",
        INTERPRETER_SANDBOX="bwrap",
        INTERPRETER_JOB_TTL="1",
        INTERPRETER_CLEANUP_INTERVAL_S="0.5",
    ) as server:
        try:
            client = server.client()
            job_id = submit(client, code, capture_files=False)
            # a long poll: the job row lives only a second once it is final
            response = client.get(f"/jobs/{job_id}/results", params={"wait": 20}, timeout=30)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["stdout"] == "nested\n", body["stderr"]
            workspace = Path(body["working_directory"])
            assert workspace.is_dir()
            give_up = time.monotonic() + 20
            while client.get(f"/jobs/{job_id}/status").status_code != 404:
                assert time.monotonic() < give_up, "the job was never deleted"
                time.sleep(0.1)
            give_up = time.monotonic() + 5
            while workspace.exists() and time.monotonic() < give_up:
                time.sleep(0.1)
            assert not workspace.exists(), "the job is gone but its workspace stays"
            assert "RecursionError" not in server.stderr_path.read_text()
            control(client)
        finally:
            if workspace is not None and workspace.exists():  # iterative, unlike rmtree
                subprocess.run(["rm", "-rf", "--", str(workspace)], check=False, timeout=60)


# -- 7. from the host: no job process has the host's uid 0 or the server's uid ----------------
PARENT_AND_CHILD = {
    "python": (
        "import os, time\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    time.sleep(2)\n"
        "    os._exit(0)\n"
        "time.sleep(2)\n"
        "os.waitpid(child, 0)\n"
        "print('done')\n"
    ),
    "shell": "sleep 2 & sleep 2; wait; echo done\n",
    "javascript": (
        "const child = require('child_process').spawn('sleep', ['2']);\n"
        "child.on('exit', () => console.log('done'));\n"
    ),
}


def host_ids(proc: psutil.Process) -> tuple[list[int], list[int]]:
    """The real, effective, saved and filesystem uids and gids the host sees."""
    status = Path(f"/proc/{proc.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return [int(v) for v in fields["Uid"].split()], [int(v) for v in fields["Gid"].split()]


def job_ids_on_host(
    attacker: Attacker, job_id: str, marker: str, expected: int
) -> dict[int, tuple[list[int], list[int]]]:
    """uids and gids of the job's processes, once ``expected`` of them run."""
    give_up = time.monotonic() + 5
    while len(procs := marked(marker)) < expected:
        if time.monotonic() > give_up:
            status = attacker.client.get(f"/jobs/{job_id}/status").json()
            pytest.fail(f"found {len(procs)} of the job's processes; the job: {status}")
        time.sleep(0.02)
    attacker.server.track(procs)
    found = {}
    for proc in procs:
        with contextlib.suppress(OSError, ValueError, KeyError):
            found[proc.pid] = host_ids(proc)
    assert found, "the job's processes were gone before their ids were read"
    return found


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_job_process_runs_as_host_root_or_as_the_server(
    attacker: Attacker, language: str
) -> None:
    job_id, marker = attacker.start(PARENT_AND_CHILD[language], language)
    ids = job_ids_on_host(attacker, job_id, marker, expected=2)
    wait_final(attacker.client, job_id)
    body = attacker.check(job_id, marker)
    assert body["stdout"] == "done\n", body["stderr"]
    server_uid, server_gid = os.getuid(), os.getgid()  # the test started the server
    for pid, (uids, gids) in ids.items():
        assert 0 not in uids and server_uid not in uids, f"pid {pid}: Uid {uids}"
        assert 0 not in gids and server_gid not in gids, f"pid {pid}: Gid {gids}"


def test_two_concurrent_jobs_run_as_different_host_uids(attacker: Attacker) -> None:
    started = [attacker.start(PARENT_AND_CHILD["python"]) for _ in range(2)]
    seen = [job_ids_on_host(attacker, job_id, marker, expected=2) for job_id, marker in started]
    for job_id, marker in started:
        wait_final(attacker.client, job_id)
        attacker.check(job_id, marker)
    uids = [{uid for ids, _ in found.values() for uid in ids} for found in seen]
    assert uids[0].isdisjoint(uids[1]), f"both jobs ran as host uids {uids}"
