from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import psutil
import pytest
import uvloop

from interpreter.errors import ExecutionError
from interpreter.process.run import ProcessOutcome, ProcessSpec, ScanLimits, run_process

PYTHON = "/usr/bin/python3"
BASH = "/bin/bash"
NODE = "/usr/bin/node"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
MiB = 1024 * 1024


def make_spec(tmp_path: Path, *argv: str, **overrides: Any) -> ProcessSpec:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    options: dict[str, Any] = {
        "argv": argv,
        "cwd": work,
        "env": ENV,
        "timeout_s": 10.0,
        "stdout_path": tmp_path / "out" / "stdout",
        "stderr_path": tmp_path / "out" / "stderr",
        "kill_grace_s": 0.3,
    }
    return ProcessSpec(**(options | overrides))


def stdout_of(outcome: ProcessOutcome) -> bytes:
    return outcome.stdout.path.read_bytes()


def assert_gone(pid: int, within_s: float = 2.0) -> None:
    """``pid`` is dead (a zombie waiting for an adopting init counts as dead)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"process {pid} survived the job")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_captures_stdout_stderr_and_exit_code(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, BASH, "-c", "echo out; echo err >&2; printf 'no newline'")
    outcome = await run_process(spec)
    assert (outcome.termination, outcome.exit_code, outcome.signal) == ("exit", 0, None)
    assert stdout_of(outcome) == b"out\nno newline"
    assert outcome.stderr.path.read_bytes() == b"err\n"
    assert outcome.stdout.total_bytes == 14 and not outcome.stdout.truncated
    assert outcome.started_at.tzinfo is UTC and outcome.finished_at >= outcome.started_at
    assert 0 < outcome.duration_ms < 2000
    assert outcome.usage.pid > 0


async def test_nonzero_exit_code_is_reported(tmp_path: Path) -> None:
    outcome = await run_process(make_spec(tmp_path, PYTHON, "-c", "raise SystemExit(7)"))
    assert (outcome.termination, outcome.exit_code, outcome.signal) == ("exit", 7, None)


async def test_death_by_signal_is_decoded(tmp_path: Path) -> None:
    outcome = await run_process(make_spec(tmp_path, BASH, "-c", "kill -9 $$"))
    assert (outcome.termination, outcome.exit_code, outcome.signal) == ("exit", None, 9)


async def test_environment_is_exactly_the_spec_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTERPRETER_FAKE_SECRET", "hunter2")
    outcome = await run_process(make_spec(tmp_path, "/usr/bin/env"))
    assert sorted(stdout_of(outcome).decode().splitlines()) == [
        "LANG=C.UTF-8",
        "PATH=/usr/bin:/bin",
    ]


async def test_program_is_found_on_the_spec_path(tmp_path: Path) -> None:
    outcome = await run_process(make_spec(tmp_path, "python3", "-c", "print('found')"))
    assert stdout_of(outcome) == b"found\n"


async def test_runs_in_spec_cwd_without_moving_the_server(tmp_path: Path) -> None:
    server_cwd = os.getcwd()
    outcome = await run_process(make_spec(tmp_path, "/bin/pwd"))
    assert stdout_of(outcome) == f"{tmp_path / 'work'}\n".encode()
    assert os.getcwd() == server_cwd


async def test_stdin_is_dev_null(tmp_path: Path) -> None:
    script = "readlink /proc/self/fd/0; cat; echo eof"
    outcome = await run_process(make_spec(tmp_path, BASH, "-c", script, timeout_s=5.0))
    assert stdout_of(outcome) == b"/dev/null\neof\n"


async def test_node_runs(tmp_path: Path) -> None:
    outcome = await run_process(make_spec(tmp_path, NODE, "-e", "console.log(6 * 7)"))
    assert (outcome.exit_code, stdout_of(outcome)) == (0, b"42\n")


async def test_timeout_kills_the_whole_tree(tmp_path: Path) -> None:
    script = "sleep 300 & echo $!; sleep 300"
    started = time.monotonic()
    outcome = await run_process(make_spec(tmp_path, BASH, "-c", script, timeout_s=0.3))
    assert time.monotonic() - started < 2.0
    assert (outcome.termination, outcome.exit_code, outcome.signal) == ("timeout", None, 15)
    assert_gone(int(stdout_of(outcome)))
    assert_gone(outcome.usage.pid)


async def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    script = "trap '' TERM; sleep 300 & echo $!; while :; do sleep 0.05; done"
    spec = make_spec(tmp_path, BASH, "-c", script, timeout_s=0.2, kill_grace_s=0.2)
    started = time.monotonic()
    outcome = await run_process(spec)
    assert 0.4 <= time.monotonic() - started < 2.0
    assert (outcome.termination, outcome.signal) == ("timeout", 9)
    assert_gone(int(stdout_of(outcome)))


async def test_stopped_job_still_gets_its_sigterm(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, BASH, "-c", "kill -STOP $$", timeout_s=0.2, kill_grace_s=1.0)
    started = time.monotonic()
    outcome = await run_process(spec)
    assert time.monotonic() - started < 1.0
    assert (outcome.termination, outcome.signal) == ("timeout", 15)


async def test_cancel_event_kills_the_tree(tmp_path: Path) -> None:
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, cancel.set)
    outcome = await run_process(
        make_spec(tmp_path, BASH, "-c", "sleep 300 & echo $!; wait"), cancel
    )
    assert outcome.termination == "cancelled"
    assert outcome.exit_code is None and outcome.signal is not None
    assert_gone(int(stdout_of(outcome)))


async def test_leftover_background_job_is_killed_when_the_shell_exits(tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = await run_process(make_spec(tmp_path, BASH, "-c", "sleep 300 & echo $!; exit 0"))
    after_exit_s = time.monotonic() - started - outcome.duration_ms / 1000
    assert after_exit_s < 0.4  # the sleep died with its group: no waiting for its pipe
    assert (outcome.termination, outcome.exit_code) == ("exit", 0)
    assert_gone(int(stdout_of(outcome)))


async def test_escaped_setsid_child_seen_by_the_sampler_is_killed(tmp_path: Path) -> None:
    script = "setsid sleep 300 & echo $!; sleep 0.3"
    started = time.monotonic()
    outcome = await run_process(make_spec(tmp_path, BASH, "-c", script))
    assert time.monotonic() - started < 1.0
    assert_gone(int(stdout_of(outcome)))


async def test_escaped_child_holding_the_pipe_does_not_hang_the_job(tmp_path: Path) -> None:
    script = "setsid sleep 300 & echo $!"  # gone before any sample: it escapes the executor
    started = time.monotonic()
    outcome = await run_process(make_spec(tmp_path, BASH, "-c", script))
    elapsed_s = time.monotonic() - started
    escaped = int(stdout_of(outcome))
    with contextlib.suppress(ProcessLookupError):
        os.kill(escaped, signal.SIGKILL)
    assert elapsed_s < 1.5
    assert outcome.exit_code == 0


async def test_huge_output_is_capped_to_head_and_tail(tmp_path: Path) -> None:
    program = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'BEGIN')\n"
        "block = b'0123456789' * 100_000\n"
        "for _ in range(99):\n"
        "    out.write(block)\n"
        "out.write(block[:-10])\n"
        "out.write(b'FINAL')\n"
    )
    spec = make_spec(tmp_path, PYTHON, "-c", program, output_limit_bytes=MiB)
    outcome = await run_process(spec)
    content = stdout_of(outcome)
    marker = f"\n[... {100_000_000 - MiB} bytes truncated ...]\n".encode()
    assert outcome.exit_code == 0
    assert outcome.stdout.total_bytes == 100_000_000 and outcome.stdout.truncated
    assert len(content) == MiB + len(marker)
    assert content.startswith(b"BEGIN0123456789")
    assert content[MiB // 2 : MiB // 2 + len(marker)] == marker
    assert content.endswith(b"0123456789FINAL")


async def test_peak_rss_reflects_a_big_allocation(tmp_path: Path) -> None:
    program = "import time\nblob = b'x' * (200 << 20)\ntime.sleep(0.3)\n"
    big = await run_process(make_spec(tmp_path, PYTHON, "-c", program))
    small = await run_process(make_spec(tmp_path, PYTHON, "-c", "import time; time.sleep(0.2)"))
    assert big.usage.peak_rss_bytes > 150 * MiB
    assert big.usage.peak_vms_bytes is not None and big.usage.peak_vms_bytes > 200 * MiB
    assert small.usage.peak_rss_bytes < 50 * MiB


async def test_server_memory_is_not_charged_to_the_job(tmp_path: Path) -> None:
    """The kernel copies the parent's RSS high-water mark into a child's ru_maxrss at exec."""
    ballast = b"x" * (300 << 20)
    try:
        spec = make_spec(tmp_path, PYTHON, "-c", "import time; time.sleep(0.2)")
        outcome = await run_process(spec)
    finally:
        del ballast
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset our VmHWM for the tests that follow
    # python sleeping needs ~10 MiB; the server (this test process) holds more than 300 MiB
    peak = outcome.usage.peak_rss_bytes
    assert 0 < peak < 200 * MiB, f"peak_rss {peak / MiB:.1f} MiB: {outcome.usage}"


async def test_cpu_time_of_a_busy_loop_is_measured(tmp_path: Path) -> None:
    program = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    outcome = await run_process(make_spec(tmp_path, PYTHON, "-c", program))
    usage = outcome.usage
    assert usage.cpu_user_s + usage.cpu_system_s > 0.2
    assert usage.cpu_percent_avg > 20


async def test_file_changes_are_tracked_without_following_symlinks(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    for name in ("keep", "change", "gone"):
        (work / name).write_text("before")
    script = (
        "echo more >> change; rm gone; echo new > sub/new; ln -s /etc/passwd passwd; ln -s /etc etc"
    )
    outcome = await run_process(make_spec(tmp_path, BASH, "-c", script))
    files = outcome.files
    assert files.created == (str(work / "etc"), str(work / "passwd"), str(work / "sub" / "new"))
    assert files.modified == (str(work / "change"),)
    assert files.deleted == (str(work / "gone"),)
    assert files.complete and files.note is None


async def test_fresh_cwd_skips_the_first_scan(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "planted").write_text("x")
    outcome = await run_process(make_spec(tmp_path, "/bin/true", cwd_is_fresh=True))
    assert outcome.files.created == (str(tmp_path / "work" / "planted"),)


async def test_file_tracking_can_be_off(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, BASH, "-c", "touch a b c", track_files=False)
    outcome = await run_process(spec)
    assert outcome.files.created == () and outcome.files.complete


async def test_file_scan_bound_marks_changes_incomplete(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, BASH, "-c", "touch f{1..40}", scan_limits=ScanLimits(max_entries=10))
    outcome = await run_process(spec)
    assert not outcome.files.complete
    assert outcome.files.note == "file scan stopped after 10 entries"


@pytest.mark.parametrize("program", ["/nonexistent/node", "node-that-is-not-installed"])
async def test_missing_executable_raises_execution_error(tmp_path: Path, program: str) -> None:
    before = open_fds()
    with pytest.raises(ExecutionError) as caught:
        await run_process(make_spec(tmp_path, program, "-e", "1"))
    assert caught.value.message == f"cannot start {program!r}: No such file or directory"
    assert open_fds() == before


async def test_missing_cwd_raises_execution_error(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "/bin/true", cwd=tmp_path / "missing")
    with pytest.raises(ExecutionError, match="missing: No such file or directory"):
        await run_process(spec)


async def test_no_descriptor_is_leaked(tmp_path: Path) -> None:
    await run_process(make_spec(tmp_path, "/bin/true"))  # warm up lazily opened fds
    before = open_fds()
    for i in range(20):
        script = f"echo {i}; echo {i} >&2; sleep 300 &"
        await run_process(make_spec(tmp_path, BASH, "-c", script))
    await run_process(make_spec(tmp_path, "/bin/sleep", "5", timeout_s=0.05, kill_grace_s=0))
    assert open_fds() == before


async def test_cancelling_the_coroutine_kills_the_tree_and_closes_everything(
    tmp_path: Path,
) -> None:
    before = open_fds()
    spec = make_spec(tmp_path, BASH, "-c", "echo $$; sleep 300 & echo $!; wait")
    task = asyncio.create_task(run_process(spec))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leader, sleeper = map(int, spec.stdout_path.read_text().split())
    assert_gone(sleeper)
    with pytest.raises(ChildProcessError):
        os.waitpid(leader, os.WNOHANG)  # already reaped
    assert open_fds() == before


def test_works_under_uvloop(tmp_path: Path) -> None:
    script = "echo hello; sleep 300 & echo $!; sleep 300"
    spec = make_spec(tmp_path, BASH, "-c", script, timeout_s=0.3)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        quick = runner.run(run_process(make_spec(tmp_path, BASH, "-c", "echo hi; exit 3")))
        assert (quick.exit_code, stdout_of(quick)) == (3, b"hi\n")
        slow = runner.run(run_process(spec))
    assert slow.termination == "timeout"
    assert_gone(int(stdout_of(slow).split()[1]))
