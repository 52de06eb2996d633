"""Input files sent with a job: base64 in the JSON body or parts of a multipart body, written
into the job's working directory before it starts, the job's own, never written through a
symlink a job planted, and refused with 422 naming the file when they break a rule."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import pytest

from tests.app.conftest import Api


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def files(*pairs: tuple[str, bytes]) -> list[dict[str, str]]:
    return [{"path": path, "content": b64(content)} for path, content in pairs]


async def test_json_input_files_are_read_by_python(api: Api) -> None:
    binary = bytes(range(256)) * 4
    code = (
        "import hashlib\n"
        "print(open('notes.txt').read())\n"
        "print(hashlib.sha256(open('data/raw/blob.bin', 'rb').read()).hexdigest())\n"
    )

    body = await api.run(
        code, input_files=files(("notes.txt", "héllo\n".encode()), ("data/raw/blob.bin", binary))
    )

    assert body["status"] == "completed", body
    assert body["stdout"] == f"héllo\n\n{hashlib.sha256(binary).hexdigest()}\n"


async def test_json_input_files_are_read_by_shell_and_not_listed_as_created(api: Api) -> None:
    body = await api.run(
        "cat ./in/a.csv; wc -c < in/b.txt; echo made > out.txt",
        "shell",
        input_files=files(("./in//a.csv", b"a,b\n1,2\n"), ("in/b.txt", b"12345")),
    )

    assert body["status"] == "completed", body
    assert body["stdout"] == "a,b\n1,2\n5\n"
    workdir = body["working_directory"]
    assert body["files_created"] == [os.path.join(workdir, "out.txt")]  # not its inputs
    assert body["files_modified"] == [] and body["files_deleted"] == []


async def test_the_job_may_modify_and_delete_its_input_files(api: Api) -> None:
    code = (
        "import os\n"
        "with open('keep.txt', 'a') as f: f.write('more\\n')\n"
        "os.remove('data/gone.txt')\n"
        "os.rmdir('data')\n"
        "print(open('keep.txt').read(), end='')\n"
    )

    body = await api.run(
        code, input_files=files(("keep.txt", b"first\n"), ("data/gone.txt", b"bye"))
    )

    assert body["status"] == "completed", body
    assert body["stdout"] == "first\nmore\n"
    workdir = body["working_directory"]
    assert body["files_created"] == []
    assert body["files_modified"] == [os.path.join(workdir, "keep.txt")]
    assert body["files_deleted"] == [os.path.join(workdir, "data", "gone.txt")]


async def test_input_files_replace_files_of_a_named_directory(api: Api) -> None:
    first = await api.run("echo old > in.txt", "shell", working_directory="replaced")
    assert first["status"] == "completed", first

    body = await api.run(
        "cat in.txt",
        "shell",
        working_directory="replaced",
        input_files=files(("in.txt", b"new\n")),
    )

    assert body["status"] == "completed", body
    assert body["stdout"] == "new\n"
    assert body["files_created"] == [] and body["files_modified"] == []


async def test_a_multipart_upload_of_a_few_mib_is_read_by_the_job(api: Api) -> None:
    big = os.urandom(3 * 2**20)  # over INTERPRETER_MAX_BODY_BYTES (2 MiB) as a whole body
    small = b"x,y\n"
    request = {
        "code": "import hashlib\n"
        "print(hashlib.sha256(open('data/big.bin', 'rb').read()).hexdigest())\n"
        "print(open('small.csv').read(), end='')\n"
        "print(open('json.txt').read())",
        "language": "python",
        "input_files": files(("json.txt", b"from json")),
    }

    response = await api.client.post(
        "/execute",
        params={"wait": 20},
        data={"request": json.dumps(request)},
        files=[("files", ("data/big.bin", big)), ("files", ("small.csv", small))],
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed", body
    assert body["stdout"] == f"{hashlib.sha256(big).hexdigest()}\nx,y\nfrom json\n"
    assert body["files_created"] == []


async def test_the_request_part_may_be_sent_as_a_file(api: Api) -> None:
    request = json.dumps({"code": "cat a.txt", "language": "shell"}).encode()

    response = await api.client.post(
        "/execute",
        params={"wait": 10},
        files=[("request", ("request.json", request)), ("files", ("a.txt", b"hi\n"))],
    )

    assert response.status_code == 200, response.text
    assert response.json()["stdout"] == "hi\n"


async def test_a_multipart_request_part_is_validated_as_a_json_body(api: Api) -> None:
    response = await api.client.post(
        "/execute", files={"request": (None, json.dumps({"language": "python"}))}
    )

    assert response.status_code == 422
    assert "code" in json.dumps(response.json()["detail"])


@pytest.mark.parametrize(
    ("parts", "said"),
    [
        ([("files", ("a.txt", b"1"))], "no 'request' part"),
        ([("request", (None, "{}")), ("other", (None, "x"))], "unknown multipart part 'other'"),
        ([("request", (None, "{}")), ("files", (None, "x"))], "has no filename"),
        ([("request", (None, "{}")), ("request", (None, "{}"))], "more than one 'request'"),
    ],
)
async def test_a_multipart_body_of_other_parts_is_refused(
    api: Api, parts: list[Any], said: str
) -> None:
    response = await api.client.post("/execute", files=parts)

    assert response.status_code == 422, response.text
    assert said in response.json()["detail"]


async def test_a_multipart_body_over_the_upload_cap_is_413(make_api: Any) -> None:
    api = await make_api(max_body_bytes=16 * 1024, max_upload_bytes=64 * 1024)
    request = json.dumps({"code": "print(1)"})

    response = await api.client.post(
        "/execute", data={"request": request}, files=[("files", ("a.bin", b"0" * 70_000))]
    )

    assert response.status_code == 413
    assert "the maximum is 65536 bytes" in response.json()["detail"]


async def test_a_json_body_stays_within_the_body_cap(make_api: Any) -> None:
    api = await make_api(max_body_bytes=64 * 1024, max_upload_bytes=2**20)

    response = await api.client.post(
        "/execute", json={"code": "print(1)", "input_files": files(("a.bin", b"0" * 70_000))}
    )

    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/etc/passwd", "'/etc/passwd': the path is absolute"),
        ("../escape.txt", "'../escape.txt': the path holds '..'"),
        ("data/../../escape.txt", "'data/../../escape.txt': the path holds '..'"),
        ("", "input file path is empty"),
        ("./", "'./': the path names a directory"),
        (".", "'.': the path names no file"),
        ("a\x00b", "the path holds a NUL byte"),
        ("d/" + "n" * 256, "a name in the path is longer than 255 bytes"),
        ("/".join(["d" * 200] * 21), "the maximum is 4095"),
    ],
)
async def test_a_bad_path_is_refused_naming_the_file(api: Api, path: str, said: str) -> None:
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "input_files": files((path, b"x"))}
    )

    assert response.status_code == 422, response.text
    assert said in response.json()["detail"]


@pytest.mark.parametrize(
    ("pairs", "said"),
    [
        ((("a.txt", b"1"), ("./a.txt", b"2")), "input file './a.txt': the same path as 'a.txt'"),
        (
            (("data", b"1"), ("data/in.csv", b"2")),
            "input file 'data': a file where input file 'data/in.csv' needs a directory",
        ),
    ],
)
async def test_paths_that_collide_are_refused_naming_the_files(
    api: Api, pairs: tuple[tuple[str, bytes], ...], said: str
) -> None:
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "input_files": files(*pairs)}
    )

    assert response.status_code == 422, response.text
    assert response.json()["detail"] == said


async def test_content_that_is_not_base64_is_refused_naming_the_file(api: Api) -> None:
    response = await api.client.post(
        "/execute",
        json={"code": "print(1)", "input_files": [{"path": "in.bin", "content": "not base64!"}]},
    )

    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "input file 'in.bin': content is not valid base64"


async def test_too_many_input_files_are_refused(make_api: Any) -> None:
    api = await make_api(max_input_files=3)
    four = files(*((f"f{i}.txt", b"x") for i in range(4)))

    as_json = await api.client.post("/execute", json={"code": "print(1)", "input_files": four})
    as_parts = await api.client.post(
        "/execute",
        data={"request": json.dumps({"code": "print(1)"})},
        files=[("files", (f"f{i}.txt", b"x")) for i in range(6)],
    )

    for response in (as_json, as_parts):
        assert response.status_code == 422, response.text
        assert response.json()["detail"] == "too many input files; the maximum is 3 per job"


async def test_too_large_input_files_are_refused_naming_the_file(make_api: Any) -> None:
    api = await make_api(max_input_file_bytes=1000, max_upload_bytes=2500)

    one = await api.client.post(
        "/execute", json={"code": "print(1)", "input_files": files(("big.bin", b"0" * 1001))}
    )
    total = await api.client.post(
        "/execute",
        data={"request": json.dumps({"code": "print(1)"})},
        files=[("files", (f"f{i}.bin", b"0" * 900)) for i in range(2)]
        + [("files", ("last.bin", b"0" * 800))],
    )

    assert one.status_code == 422, one.text
    assert one.json()["detail"] == (
        "input file 'big.bin' is 1001 bytes; the maximum is 1000 bytes per file"
    )
    assert total.status_code == 422, total.text
    assert total.json()["detail"] == (
        "input files total more than 2500 bytes (the maximum), reached at 'last.bin'"
    )


async def test_a_planted_symlink_fails_the_job_naming_the_file(api: Api, tmp_path: Any) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("untouched")
    plant = await api.run(
        f"ln -s {outside} data; ln -s {outside}/target.txt in.txt",
        "shell",
        working_directory="planted",
    )
    assert plant["status"] == "completed", plant

    through_dir = await api.run(
        "echo ran", "shell", working_directory="planted", input_files=files(("data/x", b"evil"))
    )
    at_name = await api.run(
        "echo ran", "shell", working_directory="planted", input_files=files(("in.txt", b"evil"))
    )

    for body, name in ((through_dir, "data/x"), (at_name, "in.txt")):
        assert body["status"] == "failed", body
        assert body["stdout"] == ""  # it never started
        assert f"input file '{name}' not written" in body["error_message"]
        assert "symlink" in body["error_message"]
        assert body["termination_reason"] == "sandbox_error"
    assert sorted(os.listdir(outside)) == ["target.txt"]
    assert (outside / "target.txt").read_text() == "untouched"


async def test_input_files_leave_the_store_once_the_job_is_final(api: Api) -> None:
    job_id = await api.submit("print(1)", input_files=files(("a.txt", b"1")))
    await api.wait(job_id)

    await api.wait_until(lambda: job_id not in api.store.inputs, 5, "inputs dropped")
    assert (await api.status(job_id))["status"] == "completed"
    # the job's request holds their number, never their bytes
    assert api.store.jobs[job_id].request.input_file_count == 1


def multipart_body(request: dict[str, Any], *parts: tuple[str, bytes]) -> tuple[bytes, str]:
    """A multipart body built by hand (to send it chunked) and its content type."""
    boundary = "inputs-boundary-7f3a"
    chunks = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="request"\r\n\r\n'.encode()
        + json.dumps(request).encode()
        + b"\r\n"
    ]
    for path, content in parts:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path}"'
        chunks.append(f"{head}\r\n\r\n".encode() + content + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


async def test_a_chunked_multipart_body_has_the_upload_cap(make_api: Any) -> None:
    api = await make_api(max_body_bytes=16 * 1024, max_upload_bytes=64 * 1024)

    async def send(size: int) -> Any:
        body, content_type = multipart_body(
            {"code": "print(len(open('a.bin', 'rb').read()))"}, ("a.bin", b"0" * size)
        )

        async def chunks() -> Any:
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

        return await api.client.post(
            "/execute",
            params={"wait": 10},
            content=chunks(),
            headers={"Content-Type": content_type},
        )

    within, over = await send(40_000), await send(70_000)

    assert within.status_code == 200, within.text
    assert within.json()["stdout"] == "40000\n"
    assert over.status_code == 413
    assert over.json()["detail"] == "request body is larger than the maximum of 65536 bytes"


@pytest.mark.parametrize("as_file", [False, True])
async def test_a_request_part_over_the_body_cap_is_413(make_api: Any, as_file: bool) -> None:
    api = await make_api(max_body_bytes=16 * 1024)
    request = {"code": "print(1)", "metadata": {"pad": "x" * 20_000}}
    filename = "request.json" if as_file else None

    response = await api.client.post("/execute", files={"request": (filename, json.dumps(request))})

    assert response.status_code == 413
    assert "the 'request' part is" in response.json()["detail"]


async def test_a_job_whose_input_files_are_gone_from_the_store_fails_saying_so(
    make_api: Any,
) -> None:
    api = await make_api(max_jobs=2)
    busy = await api.submit("sleep 1", "shell", working_directory="gone-inputs")
    await api.wait_for(busy, {"running"})
    job_id = await api.submit(
        "echo ran", "shell", working_directory="gone-inputs", input_files=files(("a", b"1"))
    )
    del api.store.inputs[job_id]  # read once the directory is free: after the busy job

    await api.wait(job_id)
    body = await api.results(job_id)

    assert body["status"] == "failed"
    assert body["stdout"] == ""
    assert body["error_message"] == "the job's input files are no longer in the job store"
    assert body["termination_reason"] == "sandbox_error"


async def test_the_files_of_a_job_cancelled_before_it_ran_leave_the_store(make_api) -> None:
    api = await make_api(max_jobs=1)
    busy = await api.submit("import time; time.sleep(30)")
    await api.wait_for(busy, {"running"})
    job_id = await api.submit("print(1)", input_files=files(("a.txt", b"1" * 1024)))

    cancelled = await api.client.post(f"/jobs/{job_id}/cancel")

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert job_id not in api.store.inputs
    await api.client.post(f"/jobs/{busy}/cancel")
