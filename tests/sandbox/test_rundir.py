"""The sandbox's run directory of one server (``RunDir``): its instance lock against the sweep of
other servers starting at the same time."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interpreter.sandbox import rundir
from interpreter.sandbox.rundir import RunDir


@pytest.fixture
def run_root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the run directory is made as root (it hands directories to job uids)")
    root = Path(tempfile.mkdtemp(prefix="interpreter-test-", dir="/run"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_an_instance_swept_away_while_its_server_starts_is_made_anew(
    run_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restarted server's instance is stale until it takes the lock again; another server
    # starting at that moment sweeps it away between its mkdir and its opening the lock file.
    run = RunDir(run_root, tmp_path / "data")
    real_open = os.open
    swept = []

    def open_after_a_sweep(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path) == run.root / "lock" and not swept:
            swept.append(path)
            shutil.rmtree(run.root)  # what the other server's sweep does
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(rundir.os, "open", open_after_a_sweep)
    run.setup()
    try:
        assert swept and (run.root / "lock").is_file()
        assert run.mounts.is_dir() and run.prefixes.is_dir()
    finally:
        run.close()
