"""The bubblewrap sandbox: its command line, fail-closed start, and jobs run in it for real.

Jobs go through the real app in process (a MemoryStore) with ``sandbox="bwrap"``; each test that
needs the sandbox is skipped with the reason when this host cannot run it (no bwrap, no root).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from interpreter.api.app import create_app
from interpreter.config import Settings
from interpreter.errors import ConfigurationError
from interpreter.sandbox import BwrapSandbox, ResourceLimits, SandboxJob, bwrap, mounts
from interpreter.sandbox.rundir import RunDir
from interpreter.sandbox.uids import UidPool
from interpreter.sandbox.volumes import VolumeFactory, VolumeSize
from tests.sandbox.usable import UNUSABLE, cgroup_dirs

MiB = 2**20


needs_bwrap = pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox here: {UNUSABLE}")


@pytest.fixture
async def sandboxed(make_api: Any) -> Any:
    if UNUSABLE is not None:
        pytest.skip(f"no sandbox here: {UNUSABLE}")
    return await make_api(sandbox="bwrap")


# -- the command line -----------------------------------------------------------------------------
def test_static_arguments_unshare_everything_and_drop_the_user() -> None:
    args = bwrap.static_args(
        MiB,
        Path("/run/i/etc"),
        [("/run/i/prefix/0", "/opt/node")],
        ["--ro-bind", "/proc/sys", "/proc/sys"],
    )
    joined = " ".join(args)
    for flag in (
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--disable-userns",
        "--uid 65534 --gid 65534",
        "--cap-drop ALL",
        "--new-session",
        "--die-with-parent",
        "--clearenv",
        "--ro-bind /usr /usr",
        "--proc /proc",
        "--dev /dev",
        f"--size {MiB} --tmpfs /tmp",
        "--ro-bind /run/i/etc /etc",
        "--ro-bind /run/i/prefix/0 /opt/node",
        "--proc /proc --ro-bind /proc/sys /proc/sys --dev /dev",
    ):
        assert flag in joined, flag
    assert "/etc/shadow" not in joined and "--bind /etc" not in joined


def test_the_sandbox_etc_holds_copies_of_public_files_only(tmp_path: Path) -> None:
    host = tmp_path / "host-etc"
    (host / "ssl" / "private").mkdir(parents=True)
    (host / "ssl" / "private" / "key.pem").write_text("secret key")
    (host / "ssl" / "openssl.cnf").write_text("cnf")
    (host / "alternatives").mkdir()
    (host / "alternatives" / "node").symlink_to("/usr/bin/nodejs")
    (host / "nsswitch.conf").write_text("hosts: files")
    (host / "shadow").write_text("root:$6$hash")
    etc = bwrap.build_etc(tmp_path / "data" / "etc", host_etc=host)
    assert (etc / "nsswitch.conf").read_text() == "hosts: files"
    assert (etc / "ssl" / "openssl.cnf").read_text() == "cnf"
    assert os.readlink(etc / "alternatives" / "node") == "/usr/bin/nodejs"
    assert not (etc / "ssl" / "private").exists() and not (etc / "shadow").exists()
    assert "nobody:x:65534:65534" in (etc / "passwd").read_text()
    assert "127.0.0.1" in (etc / "hosts").read_text()
    assert bwrap.build_etc(tmp_path / "data" / "etc", host_etc=host) == etc  # rebuilt in place


def test_prefixes_of_interpreters_outside_the_system_directories() -> None:
    assert bwrap._prefixes(["/usr/bin/python3", "/bin/bash"]) == []
    assert bwrap._prefixes(["/opt/node-v20/bin/node", "/srv/tools/ruby"]) == [
        "/opt/node-v20",
        "/srv/tools",
    ]


def test_proc_is_masked_where_the_kernel_has_the_entry(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "sys").mkdir(parents=True)
    (proc / "acpi").mkdir()
    (proc / "keys").write_text("")
    (proc / "kcore").write_text("")

    args = " ".join(bwrap.proc_masks(proc))

    assert "--ro-bind /proc/sys /proc/sys" in args
    assert "--ro-bind /dev/null /proc/keys" in args
    assert "--ro-bind /dev/null /proc/kcore" in args
    assert "--tmpfs /proc/acpi --remount-ro /proc/acpi" in args
    assert "/proc/irq" not in args and "timer_list" not in args  # not on this "kernel"


@needs_bwrap
def test_prepare_runs_bwrap_as_a_leased_uid_and_binds_the_directory_by_descriptor(
    tmp_path: Path,
) -> None:
    class FakeCgroup:
        join_files = (Path("/cg/tasks"),)
        name = "j1"

        def kill_all(self) -> None: ...

        def remove(self) -> bool:
            return True

        def pids(self) -> list[int]:
            return []

    class FakeDriver:
        version = 1

        def create(self, name: str, limits: ResourceLimits) -> Any:
            return FakeCgroup()

    # bubblewrap, as the job's uid, must be able to search the run directory's parents
    run_root = Path(tempfile.mkdtemp(prefix="interpreter-test-", dir="/run"))
    run = RunDir(run_root, tmp_path / "data")
    run.setup()
    uids = UidPool(2_000_000_000, 2_000_000_001, run_root / "uids")
    volumes = VolumeFactory(tmp_path / "volumes", run.mounts, VolumeSize(MiB, 64), spares=0)
    sandbox = BwrapSandbox(
        "/usr/bin/bwrap",
        "/usr/bin/setpriv",
        FakeDriver(),  # type: ignore[arg-type]
        ["--static"],
        "x",
        MiB,
        uids,
        run,
        volumes,
        64,
    )
    ws = tmp_path / "ws"
    ws.mkdir()
    fd = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    try:
        limits = dataclasses.replace(ResourceLimits.defaults(Settings()), workspace_bytes=MiB)
        job = SandboxJob(
            "j1",
            "python",
            ("/usr/bin/python3", "/code/j1.py"),
            ws,
            {"HOME": str(ws), "TMPDIR": "/tmp", "A": "1"},
            limits,
            cwd_fd=fd,
            code=("/code/j1.py", b"print(1)"),
        )
        (ws / "before.txt").write_text("lower")
        prepared = sandbox.prepare(job)
        argv = list(prepared.argv)
        view = run.mounts / "j1"
        assert view in mounts.mounted_under(run.mounts)
        assert os.stat(view).st_uid == prepared.uid == 2_000_000_000
        assert os.stat(view).st_mode & 0o777 == 0o700
        assert (view / "before.txt").read_text() == "lower"  # the directory opened, seen through
        (view / "after.txt").write_text("upper")
        assert not (ws / "after.txt").exists()  # on the job's own filesystem until collected
        sandbox.collect(prepared)
        assert (ws / "after.txt").read_text() == "upper"
        assert os.stat(ws / "after.txt").st_uid == 2_000_000_000
        sandbox.release(prepared)
    finally:
        os.close(fd)
        sandbox.close()
        shutil.rmtree(run_root, ignore_errors=True)
    assert not view.exists()
    assert argv[:6] == [
        "/usr/bin/setpriv",
        "--reuid=2000000000",
        "--regid=2000000000",
        "--clear-groups",
        "--no-new-privs",
        "--",
    ]
    assert argv[6:8] == ["/usr/bin/bwrap", "--static"]
    bind = argv.index("--bind-fd")
    assert argv[bind + 2] == str(ws) and argv[bind + 1].isdigit()
    data = argv.index("--ro-bind-data")
    assert argv[data + 2] == "/code/j1.py"
    assert argv[argv.index("--chdir") + 1] == str(ws)
    assert argv[-3:] == ["--", "/usr/bin/python3", "/code/j1.py"]
    assert ["--setenv", "A", "1"] == argv[argv.index("A") - 1 : argv.index("A") + 2]
    assert prepared.env == {}  # bwrap itself: an empty environment
    assert prepared.spawn_cwd == Path("/")
    assert ("--seccomp" in argv) == (sandbox.seccomp is not None)
    assert prepared.workspace is not None and prepared.workspace.limit_bytes == MiB


def test_exit_codes_above_128_are_signals_and_bwrap_errors_are_recognised(tmp_path: Path) -> None:
    sandbox = BwrapSandbox.__new__(BwrapSandbox)
    assert sandbox.decode_exit(137, None) == (None, 9)
    assert sandbox.decode_exit(152, None) == (None, 24)
    assert sandbox.decode_exit(3, None) == (3, None)
    stderr = tmp_path / "stderr"
    stderr.write_text("bwrap: Can't find source path /nope: No such file or directory\n")
    assert sandbox.setup_failure(1, stderr) == (
        "bwrap: Can't find source path /nope: No such file or directory"
    )
    assert sandbox.setup_failure(2, stderr) is None
    stderr.write_text("Traceback ...\nbwrap: not really\n")
    assert sandbox.setup_failure(1, stderr) is None


# -- fail closed ----------------------------------------------------------------------------------
def test_without_bwrap_the_server_refuses_to_start_saying_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bwrap, "find_bwrap", lambda path: None)
    with pytest.raises(ConfigurationError, match="apt-get install -y bubblewrap.*SANDBOX=none"):
        create_app(Settings(data_dir=tmp_path, sandbox="bwrap"))


def test_without_usable_cgroups_the_server_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cgroups(parent: str | None = None) -> Any:
        raise ConfigurationError("no usable cgroups: none mounted")

    monkeypatch.setattr(bwrap, "detect", no_cgroups)
    with pytest.raises(ConfigurationError, match="it needs a cgroup per job: no usable cgroups"):
        create_app(Settings(data_dir=tmp_path, sandbox="bwrap"))


async def test_without_a_sandbox_a_warning_is_logged_and_get_sandbox_says_so(
    make_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    api = await make_api(sandbox="none")
    assert any("INTERPRETER_SANDBOX=none" in r.getMessage() for r in caplog.records)
    body = (await api.client.get("/sandbox")).json()
    assert body["mode"] == "none" and body["isolated"] is False
    assert body["limits_enforced"] is False and "warning" in body["details"]
    assert body["limits"]["memory_bytes"] == {
        "default": api.settings.memory_limit_bytes,
        "maximum": api.settings.max_memory_limit_bytes,
    }


# -- jobs in the sandbox --------------------------------------------------------------------------
async def test_get_sandbox_describes_it(sandboxed: Any) -> None:
    body = (await sandboxed.client.get("/sandbox")).json()
    assert body["mode"] == "bwrap" and body["isolated"] and body["limits_enforced"]
    assert body["details"]["uid"] == 65534 and body["details"]["network"] is False
    assert "cgroup v" in body["details"]["cgroup"]


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "import os; print(os.getuid(), os.getcwd(), os.environ['TMPDIR'])"),
        ("shell", 'echo "$(id -u) $(pwd) $TMPDIR"'),
        ("javascript", "console.log(process.getuid(), process.cwd(), process.env.TMPDIR)"),
    ],
)
async def test_every_language_runs_as_nobody_in_its_own_directory(
    sandboxed: Any, language: str, code: str
) -> None:
    body = await sandboxed.run(code, language)
    workspace = sandboxed.workspace_root / body["job_id"]
    assert body["status"] == "completed", body["stderr"]
    assert body["stdout"] == f"65534 {workspace} /tmp\n"
    assert body["termination_reason"] == "exit"
    assert body["resource_usage"]["memory_bytes"]["peak_rss"] > 0  # the cgroup's peak


async def test_files_keep_their_true_absolute_paths(sandboxed: Any) -> None:
    body = await sandboxed.run("open('out.txt', 'w').write('x')\nopen('/tmp/scratch', 'w')")
    workspace = sandboxed.workspace_root / body["job_id"]
    assert body["files_created"] == [str(workspace / "out.txt")]
    assert (workspace / "out.txt").read_text() == "x"


async def test_a_long_program_runs_from_its_code_file(sandboxed: Any) -> None:
    code = "x = 1\n" * 20_000 + "print('long', x)\n"  # over the command line's inline limit
    body = await sandboxed.run(code)
    assert body["status"] == "completed", body["stderr"]
    assert body["stdout"] == "long 1\n"


async def test_memory_limit_says_so(sandboxed: Any) -> None:
    code = "a = []\nwhile True:\n    a.append(bytearray(2**20))"
    body = await sandboxed.run(code, limits={"memory_bytes": 64 * MiB})
    assert body["status"] == "failed"
    assert body["termination_reason"] == "memory_limit"
    assert body["error_message"] == "memory limit exceeded (64 MiB)"
    assert 48 * MiB <= body["resource_usage"]["memory_bytes"]["peak_rss"] <= 65 * MiB


async def test_one_huge_python_allocation_is_a_memory_limit_too(sandboxed: Any) -> None:
    body = await sandboxed.run("x = bytearray(2**40)", limits={"memory_bytes": 64 * MiB})
    assert body["termination_reason"] == "memory_limit"
    assert body["stderr"].rstrip().endswith("MemoryError")  # RLIMIT_AS: catchable in Python


async def test_cpu_limit_stops_a_spin(sandboxed: Any) -> None:
    body = await sandboxed.run("while True: pass", limits={"cpu_time_s": 0.5}, timeout=10)
    assert body["status"] == "failed"
    assert body["termination_reason"] == "cpu_limit"
    assert body["error_message"] == "CPU time limit exceeded (0.5 s)"
    assert 0.5 <= body["resource_usage"]["cpu_time_s"]["total"] < 1.5


async def test_cpu_limit_counts_every_process_of_the_job(sandboxed: Any) -> None:
    spin = "while :; do :; done"
    body = await sandboxed.run(f"{spin} & {spin} & wait", "shell", limits={"cpu_time_s": 1})
    assert body["termination_reason"] == "cpu_limit"
    assert body["execution_time_ms"] < 3000  # two spinners reach 1 s of CPU in about 0.5 s


async def test_file_size_and_open_files_limits(sandboxed: Any) -> None:
    code = (
        "import os\n"
        "try:\n"
        "    open('big', 'wb').write(b'x' * (3 * 2**20))\n"
        "except OSError as e:\n"
        "    print('fsize', e.errno)\n"
        "fds = []\n"
        "try:\n"
        "    while True: fds.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError as e:\n"
        "    print('nofile', e.errno, len(fds) < 32)\n"
    )
    body = await sandboxed.run(code, limits={"file_size_bytes": 2 * MiB, "open_files": 32})
    assert body["stdout"] == "fsize 27\nnofile 24 True\n", body["stderr"]  # EFBIG, EMFILE


async def test_workspace_limit_stops_a_job_filling_its_directory(sandboxed: Any) -> None:
    code = (
        "import time\n"
        "with open('fill', 'wb') as f:\n"
        "    while True:\n"
        "        f.write(b'x' * 2**20); f.flush(); time.sleep(0.005)"
    )
    body = await sandboxed.run(code, limits={"workspace_bytes": 4 * MiB}, timeout=20)
    assert body["termination_reason"] == "workspace_limit"
    assert body["error_message"] == "workspace disk limit exceeded (4 MiB)"


async def test_private_tmp_is_capped(make_api: Any) -> None:
    if UNUSABLE is not None:
        pytest.skip(f"no sandbox here: {UNUSABLE}")
    api = await make_api(sandbox="bwrap", tmp_limit_bytes=2 * MiB)
    code = (
        "try:\n    open('/tmp/f', 'wb').write(b'x' * 3 * 2**20)\nexcept OSError as e:\n"
        "    print(e.errno)"
    )
    body = await api.run(code)
    assert body["stdout"] == "28\n", body["stderr"]  # ENOSPC


async def test_timeout_and_signal_and_exit_reasons(sandboxed: Any) -> None:
    timed_out = await sandboxed.run("sleep 30", "shell", timeout=0.5)
    assert (timed_out["status"], timed_out["termination_reason"]) == ("timeout", "timeout")
    killed = await sandboxed.run("kill -9 $$", "shell")
    assert killed["termination_reason"] == "signal"
    assert (killed["exit_code"], killed["signal"]) == (None, 9)
    assert killed["error_message"] == "killed by signal 9 (SIGKILL)"
    exited = await sandboxed.run("exit 3", "shell")
    assert (exited["exit_code"], exited["termination_reason"]) == (3, "exit")


async def test_cancelled_job_reason(sandboxed: Any) -> None:
    job_id = await sandboxed.submit("echo started; sleep 30", "shell")
    await sandboxed.wait_for(job_id, {"running"})
    await sandboxed.client.post(f"/jobs/{job_id}/cancel")
    await sandboxed.wait_until(
        lambda: sandboxed.store.jobs[job_id].result is not None, 10, "the cancelled job's result"
    )
    body = await sandboxed.results(job_id)
    assert (body["status"], body["termination_reason"]) == ("cancelled", "cancelled")


async def test_a_sandbox_that_cannot_start_the_job_is_a_sandbox_error(sandboxed: Any) -> None:
    sandbox = sandboxed.app.state.parts.runner.sandbox
    sandbox.static = [*sandbox.static, "--ro-bind", "/nonexistent-source", "/x"]
    body = await sandboxed.run("echo 1", "shell")  # bwrap's: a Python job may start warm
    assert body["status"] == "failed"
    assert body["termination_reason"] == "sandbox_error"
    assert body["error_message"].startswith("sandbox failed: bwrap: Can't find source path")


async def test_the_jobs_cgroup_is_removed_after_it(sandboxed: Any) -> None:
    body = await sandboxed.run("sleep 0.2 & echo hi", "shell")
    assert body["status"] == "completed"
    await sandboxed.wait_until(lambda: not cgroup_dirs(body["job_id"]), 10, "cgroup removal")


async def test_a_jobs_files_belong_to_an_unprivileged_host_uid_of_the_range(
    sandboxed: Any,
) -> None:
    body = await sandboxed.run("open('mine.txt', 'w').write('x')")
    workspace = sandboxed.workspace_root / body["job_id"]
    owner = os.stat(workspace / "mine.txt").st_uid
    assert owner not in (0, os.getuid())
    assert 2_000_000_000 <= owner <= 2_000_065_535  # the default INTERPRETER_SANDBOX_UIDS


async def test_the_sandbox_reports_the_host_uids(sandboxed: Any) -> None:
    """Jobs get the range but its first uid, the warm parents' own (the pool is on)."""
    details = (await sandboxed.client.get("/sandbox")).json()["details"]
    assert details["host_uids"].startswith("2000000001-2000065535")
    assert details["warm_pool"]["parent_uid"] == 2_000_000_000


def test_a_host_without_unprivileged_user_namespaces_is_refused_saying_which_sysctl(
    tmp_path: Path,
) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "kernel").mkdir()
    (tmp_path / "user" / "max_user_namespaces").write_text("0\n")
    (tmp_path / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    with pytest.raises(ConfigurationError) as info:
        bwrap.check_user_namespaces(tmp_path)
    assert "user.max_user_namespaces is 0" in info.value.message
    assert "kernel.apparmor_restrict_unprivileged_userns is 1: set it to 0" in info.value.message
    (tmp_path / "user" / "max_user_namespaces").write_text("100\n")
    (tmp_path / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("0\n")
    bwrap.check_user_namespaces(tmp_path)  # fine now


async def test_sparse_files_and_hard_links_take_on_the_host_what_they_took_in_the_job(
    sandboxed: Any,
) -> None:
    # on the job's filesystem these take almost nothing; copied one by one (200 MiB of zeros,
    # 41 copies of the data) they would be far over the limit: kept as holes and one inode
    code = (
        "import os\n"
        "with open('sparse', 'wb') as f:\n"
        "    f.truncate(200 * 2**20)\n"  # within the file size limit, far over the workspace's
        "with open('data', 'wb') as f:\n"
        "    f.write(b'x' * 2**20)\n"
        "for i in range(40):\n"
        "    os.link('data', f'link{i}')\n"
        "print('made')\n"
    )
    body = await sandboxed.run(code, limits={"workspace_bytes": 8 * MiB})
    workspace = sandboxed.workspace_root / body["job_id"]
    assert body["stdout"] == "made\n"
    assert body["status"] == "completed", body["error_message"]
    data = (workspace / "data").stat()
    assert data.st_nlink == 41
    assert {(workspace / f"link{i}").stat().st_ino for i in range(40)} == {data.st_ino}
    assert (workspace / "sparse").stat().st_blocks * 512 < MiB


async def test_a_sparse_file_within_the_limit_keeps_its_holes_on_the_host(
    sandboxed: Any,
) -> None:
    code = "with open('sparse', 'wb') as f:\n    f.seek(200 * 2**20)\n    f.write(b'end')\n"
    body = await sandboxed.run(code, limits={"workspace_bytes": 8 * MiB})
    assert body["status"] == "completed", body["error_message"]
    kept = sandboxed.workspace_root / body["job_id"] / "sparse"
    assert kept.stat().st_size == 200 * MiB + 3
    assert kept.stat().st_blocks * 512 <= 64 * 1024  # a hole, not 200 MiB of zeros


# -- input files ----------------------------------------------------------------------------------
async def test_input_files_are_the_sandboxed_jobs_own_to_modify_and_delete(sandboxed: Any) -> None:
    inputs = [
        {"path": "data/in.csv", "content": base64.b64encode(b"a,b\n").decode()},
        {"path": "sub/gone.txt", "content": base64.b64encode(b"bye").decode()},
    ]
    code = (
        "import os\n"
        "print(os.stat('data/in.csv').st_uid == os.getuid())\n"
        "open('data/in.csv', 'a').write('1,2\\n')\n"
        "os.remove('sub/gone.txt')\n"
        "os.rmdir('sub')\n"
        "print(open('data/in.csv').read(), end='')\n"
    )

    body = await sandboxed.run(code, working_directory="inputs-here", input_files=inputs)

    assert body["status"] == "completed", body
    assert body["stdout"] == "True\na,b\n1,2\n"
    workdir = Path(body["working_directory"])
    assert not (workdir / "sub").exists()
    kept = workdir / "data" / "in.csv"
    assert kept.read_text() == "a,b\n1,2\n"
    assert kept.stat().st_uid != os.getuid()  # the job's uid, not the server's
