"""Input files on PostgreSQL: sent to an API replica, kept in the database with the job, read
by the worker process that runs it (which shares no disk with the replica)."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

from tests.acceptance.server import results, submit, wait_final
from tests.scaleout.conftest import Cluster

pytestmark = pytest.mark.acceptance

READ_MODIFY_DELETE = """
import hashlib, os
print(open('data/in.csv').read(), end='')
print(hashlib.sha256(open('blob.bin', 'rb').read()).hexdigest())
print(os.stat('data/in.csv').st_uid == os.getuid())  # the job's own
with open('data/in.csv', 'a') as f:
    f.write('3,4\\n')
os.remove('blob.bin')
print(open('data/in.csv').read(), end='')
"""


def test_input_files_sent_to_a_replica_are_read_by_a_worker(cluster: Cluster) -> None:
    api = cluster.api()
    cluster.worker()
    cluster.wait_workers(1)
    client = api.client()
    blob = os.urandom(256 * 1024)
    inputs = [
        {"path": "data/in.csv", "content": base64.b64encode(b"a,b\n1,2\n").decode()},
        {"path": "blob.bin", "content": base64.b64encode(blob).decode()},
    ]

    job_id = submit(client, READ_MODIFY_DELETE, input_files=inputs)

    assert wait_final(client, job_id)["status"] == "completed", results(client, job_id)
    full = results(client, job_id)
    assert full["stdout"] == (
        f"a,b\n1,2\n{hashlib.sha256(blob).hexdigest()}\nTrue\na,b\n1,2\n3,4\n"
    )
    workdir = full["working_directory"]
    assert full["files_created"] == []
    assert full["files_modified"] == [os.path.join(workdir, "data", "in.csv")]
    assert full["files_deleted"] == [os.path.join(workdir, "blob.bin")]


def test_a_multipart_upload_to_a_replica_is_read_by_a_worker(cluster: Cluster) -> None:
    api = cluster.api()
    cluster.worker()
    cluster.wait_workers(1)
    client = api.client(timeout=30)
    big = os.urandom(3 * 2**20)
    request = {
        "code": "import hashlib; print(hashlib.sha256(open('up/big.bin', 'rb').read()).hexdigest())"
    }

    response = client.post(
        "/execute",
        params={"wait": 20},
        files=[("request", (None, json.dumps(request))), ("files", ("up/big.bin", big))],
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed", body
    assert body["stdout"] == f"{hashlib.sha256(big).hexdigest()}\n"
