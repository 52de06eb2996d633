"""What a job can and cannot reach: its processes, its directory, its file descriptors."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import psutil


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def read_pid(api, path: Path) -> int:
    await api.wait_until(
        lambda: path.exists() and path.read_text().strip().isdigit(), 10, f"a pid in {path}"
    )
    return int(path.read_text())


# -- processes -----------------------------------------------------------------------------------
async def test_job_runs_in_its_own_session_with_stdin_from_dev_null(api) -> None:
    code = (
        "import os, sys\n"
        "print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())\n"
        "print(os.path.realpath('/proc/self/fd/0'))\n"
        "print(repr(sys.stdin.read()))"
    )
    body = await api.run(code, timeout=5)

    assert body["status"] == "completed", body["stderr"]
    assert body["stdout"].splitlines() == ["True True", "/dev/null", "''"]


async def test_job_reading_stdin_ends_at_once_instead_of_hanging(api) -> None:
    body = await api.run('read line; echo "[$line] $?"', "shell", timeout=5)

    assert body["status"] == "completed"
    assert body["stdout"] == "[] 1\n"
    assert body["execution_time_ms"] < 4000


async def test_job_inherits_no_server_file_descriptors(api) -> None:
    body = await api.run("import os\nprint(sorted(os.listdir('/proc/self/fd'), key=int))")

    assert body["stdout"] == "['0', '1', '2', '3']\n"  # 3 is listdir's own descriptor


async def test_background_process_left_by_a_finished_job_is_killed(api) -> None:
    body = await api.run("sleep 300 &\necho $! > bg.pid\necho done", "shell", timeout=10)

    assert body["status"] == "completed"
    pid = int((Path(body["working_directory"]) / "bg.pid").read_text())
    await api.wait_until(lambda: gone(pid), 5, f"leftover sleep {pid} to die")


async def test_timeout_kills_the_whole_process_tree(api) -> None:
    job_id = await api.submit(
        "sleep 300 &\necho $! > bg.pid\nsleep 300", "shell", working_directory="to", timeout=1
    )
    pid = await read_pid(api, api.workspace_root / "to" / "bg.pid")

    status = await api.wait(job_id, deadline_s=10)

    assert status["status"] == "timeout"
    await api.wait_until(lambda: gone(pid), 5, f"background sleep {pid} to die")


async def test_cancel_kills_a_descendant_that_started_its_own_session(make_api) -> None:
    api = await make_api(max_jobs=1)
    code = (
        "import os, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "open('bg.pid', 'w').write(str(child.pid))\n"
        "time.sleep(300)\n"
    )
    job_id = await api.submit(code, working_directory="escape", timeout=30)
    pid = await read_pid(api, api.workspace_root / "escape" / "bg.pid")
    await api.wait_for(job_id, {"running"})

    response = await api.client.post(f"/jobs/{job_id}/cancel")

    assert response.json()["status"] == "cancelled"
    await api.wait_until(lambda: gone(pid), 5, f"setsid sleep {pid} to die")


async def test_a_job_can_kill_only_its_own_processes_not_the_server(api) -> None:
    body = await api.run(
        "import os\nos.killpg(os.getpgid(0), 9)",  # its own group: never the server's
        timeout=5,
    )

    assert body["status"] == "failed"
    assert body["error_message"].startswith("killed by signal 9")
    assert (await api.client.get("/health")).status_code == 200


# -- directories and files -----------------------------------------------------------------------
async def test_files_in_subdirectories_are_reported_with_absolute_paths(api) -> None:
    body = await api.run(
        "import os\nos.makedirs('a/b')\nopen('a/b/deep.txt', 'w').write('x')\nopen('top', 'w')"
    )

    cwd = Path(body["working_directory"])
    assert str(cwd / "a" / "b" / "deep.txt") in body["files_created"]
    assert str(cwd / "top") in body["files_created"]
    assert body["files_created"] == sorted(body["files_created"])
    assert all(os.path.isabs(p) for p in body["files_created"])


async def test_symlinks_made_by_a_job_are_reported_not_followed(api, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("x")

    body = await api.run(
        "import os\nos.symlink(os.environ['OUT'], 'link')",
        environment_variables={"OUT": str(outside)},
    )

    cwd = Path(body["working_directory"])
    assert body["files_created"] == [str(cwd / "link")]
    assert not any("private.txt" in p for p in body["files_created"])


async def test_file_tracking_is_bounded_and_says_so(make_api) -> None:
    api = await make_api(file_scan_max_entries=50)

    body = await api.run("for i in range(300):\n    open(f'f{i}', 'w')", timeout=10)

    assert body["status"] == "completed"
    assert body["files_complete"] is False
    assert body["files_note"]
    assert len(body["files_created"]) <= 300


async def test_fifo_in_the_working_directory_does_not_hang_tracking(api) -> None:
    body = await api.run("import os\nos.mkfifo('pipe')\nprint('ok')", timeout=5)

    assert body["status"] == "completed"
    assert body["stdout"] == "ok\n"


async def test_job_that_deletes_its_own_directory_still_finishes(api) -> None:
    body = await api.run("import os, shutil\nshutil.rmtree(os.getcwd())\nprint('bye')", timeout=5)

    assert body["status"] == "completed"
    assert body["stdout"] == "bye\n"
    assert (await api.client.get(f"/results/{body['job_id']}")).status_code == 200


async def test_working_directory_swapped_for_a_symlink_after_submission_is_not_followed(
    make_api, tmp_path
) -> None:
    api = await make_api(max_jobs=1)
    outside = tmp_path / "outside"
    outside.mkdir()
    swapper = await api.submit(
        "import os, time\ntime.sleep(0.3)\nos.symlink(os.environ['OUT'], os.environ['VICTIM'])",
        environment_variables={"OUT": str(outside), "VICTIM": str(api.workspace_root / "victim")},
    )
    victim = await api.submit("open('planted.txt', 'w').write('x')", working_directory="victim")
    await api.wait(swapper)

    status = await api.wait(victim)

    assert not (outside / "planted.txt").exists(), "the job wrote outside the workspace root"
    assert status["status"] in ("completed", "failed")


async def test_output_that_is_not_utf8_is_returned_with_replacement_characters(api) -> None:
    body = await api.run("import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe \\x00 end\\n')")

    assert body["status"] == "completed"
    assert body["stdout"].startswith("ok ")
    assert body["stdout"].endswith(" end\n")
    assert "\ufffd" in body["stdout"]


async def test_both_streams_flooded_at_once_neither_deadlock_nor_grow(make_api) -> None:
    api = await make_api(max_output_bytes=64 * 1024)
    code = (
        "import sys\n"
        "for i in range(2000):\n"
        "    sys.stdout.write('o' * 1000 + '\\n')\n"
        "    sys.stderr.write('e' * 1000 + '\\n')\n"
        "print('END')"
    )
    body = await api.run(code, timeout=10)

    assert body["status"] == "completed"
    assert body["stdout_truncated"] is True and body["stderr_truncated"] is True
    assert len(body["stdout"]) < 100 * 1024 and len(body["stderr"]) < 100 * 1024
    assert body["stdout"].endswith("END\n")


async def test_retention_does_not_follow_symlinks_out_of_a_workspace(make_api, tmp_path) -> None:
    api = await make_api(job_ttl_s=0.5)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    body = await api.run(
        "import os\nos.symlink(os.environ['OUT'], 'link')",
        environment_variables={"OUT": str(outside)},
    )
    await asyncio.sleep(1.0)

    assert await api.app.state.parts.service.cleanup_expired() == 1

    assert not Path(body["working_directory"]).exists()
    assert (outside / "precious.txt").read_text() == "keep me"


async def test_environment_snapshot_matches_what_the_job_saw(api) -> None:
    body = await api.run(
        "import json, os\nprint(json.dumps(dict(os.environ)))",
        environment_variables={"GREETING": "hi"},
    )

    seen = json.loads(body["stdout"])
    snapshot = body["environment_snapshot"]
    assert set(seen) - {"PWD", "SHLVL", "_", "LC_CTYPE"} == set(snapshot)
    assert seen["HOME"] == snapshot["HOME"] == body["working_directory"]
