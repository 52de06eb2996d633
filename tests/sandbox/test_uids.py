"""Host uids for jobs: leased one per running job, machine-wide, never 0 or the server's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from interpreter.errors import ConfigurationError, ExecutionError
from interpreter.sandbox.uids import UidPool

FIRST = 2_000_000_000


def test_running_jobs_get_different_uids_and_a_returned_one_is_handed_out_again(
    tmp_path: Path,
) -> None:
    pool = UidPool(FIRST, FIRST + 2, tmp_path / "uids")
    a, b, c = pool.acquire(), pool.acquire(), pool.acquire()
    assert len({a.uid, b.uid, c.uid}) == 3
    with pytest.raises(ExecutionError, match="every sandbox uid"):
        pool.acquire()
    b.release()
    b.release()  # idempotent
    assert pool.acquire().uid == b.uid


def test_two_processes_on_one_machine_never_hold_the_same_uid(tmp_path: Path) -> None:
    locks = tmp_path / "uids"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path\n"
            "from interpreter.sandbox.uids import UidPool\n"
            f"lease = UidPool({FIRST}, {FIRST + 1}, Path({str(locks)!r})).acquire()\n"
            "print(lease.uid, flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            held = int(holder.stdout.readline())
            mine = UidPool(FIRST, FIRST + 1, locks).acquire()
            assert mine.uid != held
            with pytest.raises(ExecutionError):
                UidPool(FIRST, FIRST + 1, locks).acquire()
        finally:
            holder.kill()
    mine.release()
    assert UidPool(FIRST, FIRST + 1, locks).acquire().uid == held  # freed by the kernel at death


def test_a_range_holding_the_servers_uid_or_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="uid 0"):
        UidPool(0, 5, tmp_path / "uids")
    if os.geteuid() != 0:
        with pytest.raises(ConfigurationError, match="own uid"):
            UidPool(os.geteuid(), os.geteuid() + 1, tmp_path / "uids")


def test_the_lock_directory_must_not_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "uids").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigurationError):
        UidPool(FIRST, FIRST + 1, tmp_path / "uids")
