"""A job's files when API replicas and workers share no disk: the worker that ran the job
captures its directory into PostgreSQL, within INTERPRETER_MAX_CAPTURED_BYTES, and any replica
lists and serves them; retention deletes them with the job."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time

import psycopg
import pytest

from tests.acceptance.server import submit, wait_final
from tests.scaleout.conftest import Cluster

pytestmark = pytest.mark.acceptance

CAP = 100_000
WRITE_FILES = """
import os
open('small.txt', 'w').write('hello\\n')
os.makedirs('nested')
open('nested/data.bin', 'wb').write(bytes(range(256)) * 100)
open('big.bin', 'wb').write(b'x' * 200_000)
os.symlink('/etc/passwd', 'passwd')
"""
DATA = bytes(range(256)) * 100


def captured_rows(database_url: str, job_id: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM job_files WHERE job_id = %s", (job_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_workers_files_are_served_by_another_replica_within_the_cap(cluster: Cluster) -> None:
    a, b = cluster.api(), cluster.api()
    cluster.worker(INTERPRETER_MAX_CAPTURED_BYTES=str(CAP))
    cluster.wait_workers(1)
    client_a, client_b = a.client(), b.client()

    job_id = submit(client_a, WRITE_FILES)

    assert wait_final(client_b, job_id)["status"] == "completed"
    listing = client_b.get(f"/jobs/{job_id}/files")
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["source"] == "store" and body["complete"] is True
    files = {f["path"]: f for f in body["files"]}
    assert set(files) == {"small.txt", "nested/data.bin"}
    assert files["nested/data.bin"]["size"] == len(DATA)
    assert files["nested/data.bin"]["sha256"] == hashlib.sha256(DATA).hexdigest()
    skipped = {s["path"]: s for s in body["skipped"]}
    assert set(skipped) == {"big.bin", "passwd"}
    assert skipped["big.bin"]["type"] == "file"
    assert "INTERPRETER_MAX_CAPTURED_BYTES" in skipped["big.bin"]["reason"]
    assert skipped["passwd"]["type"] == "symlink"

    small = client_a.get(f"/jobs/{job_id}/files/small.txt")
    assert small.status_code == 200 and small.content == b"hello\n"
    assert small.headers["content-type"].startswith("text/plain")
    part = client_b.get(f"/jobs/{job_id}/files/nested/data.bin", headers={"Range": "bytes=256-511"})
    assert part.status_code == 206 and part.content == bytes(range(256))
    assert part.headers["content-range"] == f"bytes 256-511/{len(DATA)}"
    outside = client_b.get(
        f"/jobs/{job_id}/files/nested/data.bin", headers={"Range": "bytes=99999-"}
    )
    assert outside.status_code == 416
    for path in ("big.bin", "passwd"):
        assert client_b.get(f"/jobs/{job_id}/files/{path}").status_code == 404, path

    archive = client_b.get(f"/jobs/{job_id}/archive")
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["nested", "nested/data.bin", "small.txt"]
        assert tar.extractfile("nested/data.bin").read() == DATA  # type: ignore[union-attr]


def test_retention_deletes_the_captured_files_with_the_job(cluster: Cluster) -> None:
    api = cluster.api(INTERPRETER_JOB_TTL="4", INTERPRETER_CLEANUP_INTERVAL_S="0.3")
    cluster.worker()
    cluster.wait_workers(1)
    client = api.client()
    job_id = submit(client, "open('kept.txt', 'w').write('until the job goes')")
    assert wait_final(client, job_id)["status"] == "completed"
    assert captured_rows(cluster.env["INTERPRETER_DATABASE_URL"], job_id) == 1

    deadline = time.monotonic() + 20
    while client.get(f"/jobs/{job_id}/status").status_code != 404:
        assert time.monotonic() < deadline, "the job did not expire"
        time.sleep(0.1)

    assert client.get(f"/jobs/{job_id}/files").status_code == 404
    assert captured_rows(cluster.env["INTERPRETER_DATABASE_URL"], job_id) == 0
