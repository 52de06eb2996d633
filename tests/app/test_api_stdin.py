"""stdin: a string given with the job is what its code reads on standard input."""

from __future__ import annotations

import pytest

READ_ALL = "import sys; data = sys.stdin.read(); print(repr(data))"


async def test_python_reads_the_stdin_it_was_given(api) -> None:
    result = await api.run(READ_ALL, stdin="line one\nline two\n")

    assert result["status"] == "completed", result
    assert result["stdout"] == repr("line one\nline two\n") + "\n"


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("shell", 'while read -r line; do echo "got $line"; done'),
        ("javascript", "process.stdout.write('got ' + require('fs').readFileSync(0, 'utf8'))"),
    ],
)
async def test_every_language_reads_its_stdin(api, language: str, code: str) -> None:
    result = await api.run(code, language, stdin="hello\n")

    assert result["status"] == "completed", result
    assert result["stdout"] == "got hello\n"


async def test_without_stdin_the_job_reads_end_of_file_at_once(api) -> None:
    result = await api.run(READ_ALL, timeout=5)

    assert result["status"] == "completed", result
    assert result["stdout"] == "''\n"


async def test_unicode_stdin_arrives_as_utf8(api) -> None:
    result = await api.run(
        "import sys; print(sys.stdin.buffer.read().decode('utf-8') == 'héllo ✓')", stdin="héllo ✓"
    )

    assert result["stdout"] == "True\n"


async def test_the_job_cannot_change_its_stdin(api) -> None:
    code = (
        "import os\n"
        "try:\n"
        "    os.write(0, b'x')\n"
        "    print('wrote')\n"
        "except OSError as exc:\n"
        "    print('refused')\n"
    )
    result = await api.run(code, stdin="abc")

    assert result["stdout"] == "refused\n"


async def test_stdin_over_the_cap_is_refused_naming_the_sizes(make_api) -> None:
    api = await make_api(max_stdin_bytes=1024)

    response = await api.client.post("/execute", json={"code": "pass", "stdin": "x" * 1025})

    assert response.status_code == 413
    assert "stdin is 1025 bytes; the maximum is 1024 bytes" in response.json()["detail"]


async def test_stdin_must_be_a_string(api) -> None:
    response = await api.client.post("/execute", json={"code": "pass", "stdin": ["a"]})

    assert response.status_code == 422
