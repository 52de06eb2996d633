"""A finished job's files over HTTP: listed (sizes, times, sha256), read (type, byte ranges) and
archived, never through a symlink the job planted nor by opening a special file it made."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import time
from datetime import datetime

import pytest

K1 = {"X-API-Key": "k1"}
K2 = {"X-API-Key": "k2"}

BINARY = bytes(range(256)) * 40  # 10240 bytes, every byte value
WRITE_FILES = f"""
import os
open('out.csv', 'w').write('a,b\\n1,2\\n')
open('blob.bin', 'wb').write({BINARY!r})
os.makedirs('nested/deeper')
open('nested/deeper/notes.txt', 'w').write('deep\\n')
os.makedirs('empty')
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def listing(api, job_id: str, **kwargs) -> dict:
    response = await api.client.get(f"/jobs/{job_id}/files", **kwargs)
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


async def finished(api, code: str, **fields) -> str:
    job_id = await api.submit(code, **fields)
    body = await api.wait(job_id)
    assert body["status"] == "completed", body
    return job_id


async def test_a_jobs_files_are_listed_with_sizes_times_and_sha256(api) -> None:
    before = time.time()
    job_id = await finished(api, WRITE_FILES)

    body = await listing(api, job_id)

    assert body["job_id"] == job_id and body["source"] == "directory"
    assert body["complete"] is True and body["note"] is None and body["skipped"] == []
    files = {f["path"]: f for f in body["files"]}
    assert list(files) == ["blob.bin", "nested/deeper/notes.txt", "out.csv"]
    expected = {
        "out.csv": b"a,b\n1,2\n",
        "blob.bin": BINARY,
        "nested/deeper/notes.txt": b"deep\n",
    }
    for path, content in expected.items():
        assert files[path]["size"] == len(content)
        assert files[path]["sha256"] == sha(content)
        for key in ("created_at", "modified_at"):
            stamp = files[path][key]
            assert stamp.endswith(("Z", "+00:00")), stamp  # ISO 8601, UTC
    modified = datetime.fromisoformat(files["out.csv"]["modified_at"]).timestamp()
    assert before - 1 <= modified <= time.time() + 1


async def test_one_file_is_served_with_its_bytes_and_a_guessed_type(api) -> None:
    job_id = await finished(api, WRITE_FILES)

    csv = await api.client.get(f"/jobs/{job_id}/files/out.csv")
    blob = await api.client.get(f"/jobs/{job_id}/files/blob.bin")
    deep = await api.client.get(f"/jobs/{job_id}/files/nested/deeper/notes.txt")

    assert csv.status_code == 200 and csv.content == b"a,b\n1,2\n"
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["accept-ranges"] == "bytes"
    assert blob.content == BINARY
    assert blob.headers["content-type"] == "application/octet-stream"
    assert blob.headers["content-length"] == str(len(BINARY))
    assert deep.content == b"deep\n" and deep.headers["content-type"].startswith("text/plain")


async def test_a_byte_range_is_206_and_one_outside_the_file_416(api) -> None:
    job_id = await finished(api, WRITE_FILES)
    url = f"/jobs/{job_id}/files/blob.bin"
    size = len(BINARY)

    cases = {
        "bytes=0-9": (0, 10),
        "bytes=100-": (100, size),
        "bytes=-16": (size - 16, size),
        f"bytes=10-{size + 500}": (10, size),
    }
    for header, (start, end) in cases.items():
        response = await api.client.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == BINARY[start:end], header
        assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{size}", header
        assert response.headers["content-length"] == str(end - start)

    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        response = await api.client.get(url, headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["content-range"] == f"bytes */{size}"
        assert "range" in response.json()["detail"]

    ignored = await api.client.get(url, headers={"Range": "bytes=0-1,5-6"})  # several: whole
    assert ignored.status_code == 200 and ignored.content == BINARY


async def test_the_archive_holds_the_directories_and_files(api) -> None:
    job_id = await finished(api, WRITE_FILES)

    response = await api.client.get(f"/jobs/{job_id}/archive")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        contents = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in members.values()
            if m.isfile()
        }
    assert contents == {
        "out.csv": b"a,b\n1,2\n",
        "blob.bin": BINARY,
        "nested/deeper/notes.txt": b"deep\n",
    }
    directories = {name.rstrip("/") for name, m in members.items() if m.isdir()}
    assert directories == {"empty", "nested", "nested/deeper"}


async def test_planted_symlinks_are_listed_as_skipped_and_never_followed(api, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    job_id = await finished(
        api,
        "import os\n"
        "os.symlink('/etc/passwd', 'passwd')\n"
        "os.symlink(os.environ['OUT'] + '/secret.txt', 'secret.txt')\n"
        "os.symlink(os.environ['OUT'], 'outdir')\n"
        "open('real.txt', 'w').write('mine')\n",
        environment_variables={"OUT": str(outside)},
    )

    body = await listing(api, job_id)

    assert [f["path"] for f in body["files"]] == ["real.txt"]
    skipped = {s["path"]: s for s in body["skipped"]}
    assert set(skipped) == {"passwd", "secret.txt", "outdir"}
    assert all(s["type"] == "symlink" and s["reason"] for s in skipped.values())
    for path in ("passwd", "secret.txt", "outdir/secret.txt", "outdir"):
        response = await api.client.get(f"/jobs/{job_id}/files/{path}")
        assert response.status_code == 404, path
        assert "detail" in response.json()
        assert "not yours" not in response.text and "root:" not in response.text
    archive = await api.client.get(f"/jobs/{job_id}/archive")
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        assert tar.getnames() == ["real.txt"]


async def test_paths_that_leave_the_directory_are_404(api) -> None:
    job_id = await finished(api, WRITE_FILES)
    for path in ("../x", "nested/../../etc/passwd", "%2Fetc%2Fpasswd", "nested", "missing"):
        response = await api.client.get(f"/jobs/{job_id}/files/{path}")
        assert response.status_code == 404, path
        assert response.json()["detail"]


async def test_a_fifo_is_not_opened(api) -> None:
    job_id = await finished(api, "import os\nos.mkfifo('pipe')\nopen('x.txt', 'w').write('x')")

    started = time.monotonic()
    body = await asyncio.wait_for(listing(api, job_id), 5)
    served = await asyncio.wait_for(api.client.get(f"/jobs/{job_id}/files/pipe"), 5)
    archive = await asyncio.wait_for(api.client.get(f"/jobs/{job_id}/archive"), 5)

    assert time.monotonic() - started < 5
    assert body["skipped"] == [
        {"path": "pipe", "type": "fifo", "reason": "a named pipe: never opened"}
    ]
    assert served.status_code == 404
    assert archive.status_code == 200


async def test_a_walk_past_its_bound_says_the_listing_is_incomplete(make_api) -> None:
    api = await make_api(file_scan_max_entries=20)
    job_id = await finished(
        api, "for i in range(50):\n    open(f'f{i:02}', 'w').write(str(i))", capture_files=False
    )

    body = await listing(api, job_id)

    assert body["complete"] is False and "20 entries" in body["note"]
    assert len(body["files"]) <= 20


async def test_another_keys_job_files_are_404(make_api) -> None:
    api = await make_api(enable_authentication=True, api_keys=["k1", "k2"])
    api.client.headers.update(K1)
    job_id = await finished(api, WRITE_FILES)
    not_found = {"detail": f"Job not found: {job_id}"}

    for path in ("files", "files/out.csv", "archive"):
        response = await api.client.get(f"/jobs/{job_id}/{path}", headers=K2)
        assert response.status_code == 404, path
        assert response.json() == not_found
    assert (await api.client.get(f"/jobs/{job_id}/files/out.csv")).content == b"a,b\n1,2\n"


async def test_a_job_that_is_not_final_is_409(api) -> None:
    job_id = await api.submit("import time\nopen('x', 'w').write('x')\ntime.sleep(30)", timeout=60)
    await api.wait_for(job_id, {"running"})

    for path in ("files", "files/x", "archive"):
        response = await api.client.get(f"/jobs/{job_id}/{path}")
        assert response.status_code == 409, path
        assert "running" in response.json()["detail"]
    await api.client.post(f"/jobs/{job_id}/cancel")


async def test_a_pending_job_is_409(make_api) -> None:
    api = await make_api(max_jobs=1)
    blocker = await api.submit("import time\ntime.sleep(30)", timeout=60)
    await api.wait_for(blocker, {"running"})
    pending = await api.submit("print(1)")

    response = await api.client.get(f"/jobs/{pending}/files")

    assert response.status_code == 409 and "pending" in response.json()["detail"]
    await api.client.post(f"/jobs/{pending}/cancel")
    await api.client.post(f"/jobs/{blocker}/cancel")
    cancelled = await listing(api, pending)  # cancelled before it ran: final, nothing there
    assert cancelled["files"] == [] and cancelled["source"] == "none"


async def test_an_expired_jobs_files_are_gone(make_api) -> None:
    api = await make_api(job_ttl_s=0.5)
    job_id = await finished(api, WRITE_FILES)
    assert (await api.client.get(f"/jobs/{job_id}/files/out.csv")).status_code == 200
    await asyncio.sleep(1.0)

    assert await api.app.state.parts.service.cleanup_expired() == 1

    for path in ("files", "files/out.csv", "archive"):
        assert (await api.client.get(f"/jobs/{job_id}/{path}")).status_code == 404, path
    assert not (api.workspace_root / job_id).exists()


@pytest.mark.timeout(60)
async def test_a_large_file_streams_with_ranges(api) -> None:
    size = 48 * 2**20
    job_id = await finished(
        api,
        f"with open('big.bin', 'wb') as f:\n"
        f"    for i in range({size // 2**20}):\n"
        f"        f.write(bytes([i]) * 2**20)\n",
        timeout=30,
    )
    url = f"/jobs/{job_id}/files/big.bin"

    digest = hashlib.sha256()
    received = 0
    async with api.client.stream("GET", url) as response:
        assert response.headers["content-length"] == str(size)
        async for chunk in response.aiter_bytes():
            digest.update(chunk)
            received += len(chunk)
    tail = await api.client.get(url, headers={"Range": f"bytes={size - 3 * 2**20 - 2}-"})

    assert received == size
    files = {f["path"]: f for f in (await listing(api, job_id))["files"]}
    assert files["big.bin"]["sha256"] == digest.hexdigest()
    assert tail.status_code == 206
    assert tail.content == b"".join(
        bytes([i]) * n for i, n in ((44, 2), *((j, 2**20) for j in (45, 46, 47)))
    )


async def test_a_named_working_directorys_files_are_served(api) -> None:
    job_id = await finished(
        api, "open('report.html', 'w').write('<script>alert(1)</script>')", working_directory="proj"
    )

    body = await listing(api, job_id)
    page = await api.client.get(f"/jobs/{job_id}/files/report.html")

    assert [f["path"] for f in body["files"]] == ["report.html"]
    assert page.content == b"<script>alert(1)</script>"
    assert page.headers["content-type"].startswith("text/html")
    # never run as a page of the API's origin
    assert page.headers["content-security-policy"] == "sandbox"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["content-disposition"] == "attachment; filename*=UTF-8''report.html"


SPARSE = """
open('small.txt', 'w').write('small')
for name in ('a.sparse', 'b.sparse', 'c.sparse'):
    with open(name, 'wb') as f:
        f.truncate(200 * 2**20)  # 200 MiB that take no disk
"""


async def test_sparse_files_cost_a_listing_their_size_within_its_budget(api) -> None:
    job_id = await finished(api, SPARSE)

    body = await listing(api, job_id)

    hashed = {f["path"]: f["sha256"] for f in body["files"]}
    assert hashed["small.txt"] == sha(b"small")
    # 256 MiB of hashing a listing: the first sparse file, not the others
    assert sum(value is not None for name, value in hashed.items() if name.endswith(".sparse")) == 1


async def test_the_archive_stops_at_the_captured_bytes_cap(make_api) -> None:
    api = await make_api(max_captured_bytes=2**20)
    job_id = await finished(api, SPARSE)

    response = await api.client.get(f"/jobs/{job_id}/archive")

    assert response.status_code == 200
    assert response.headers["X-Archive-Omitted"] == "3"
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        assert [m.name for m in tar.getmembers() if m.isfile()] == ["small.txt"]
