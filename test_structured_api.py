#!/usr/bin/env python3
"""Check a running interpreter server against the API contract, over HTTP.

    python test_structured_api.py [URL] [--api-key KEY]

URL defaults to $INTERPRETER_URL, then http://localhost:8000; the API key (sent as ``X-API-Key``)
defaults to $INTERPRETER_API_KEY. Every check prints one line, PASS or FAIL with a short reason;
the exit status is 0 when all checks pass, 1 when any fails and 2 when the server cannot be reached.

Only the standard library and httpx are needed.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

DEFAULT_URL = "http://localhost:8000"
FINAL_STATUSES = {"completed", "failed", "timeout", "cancelled"}
ALL_STATUSES = FINAL_STATUSES | {"pending", "running"}
POLL_INTERVAL_S = 0.05
TRIVIAL_JOB_MAX_RSS_BYTES = 64 * 2**20  # bash running `echo` needs about 4 MiB

# The fields the contract promises in each answer.
HEALTH_KEYS = {
    "status",
    "timestamp",
    "uptime_seconds",
    "version",
    "active_jobs",
    "total_jobs_processed",
    "system_resources",
    "service_checks",
}
STATUS_KEYS = {
    "job_id",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "execution_time_ms",
    "error_message",
    "metadata",
}
STRUCTURED_RESULT_KEYS = {"status", "stdout", "stderr", "files"}
FULL_RESULT_KEYS = {
    "job_id",
    "status",
    "stdout",
    "stderr",
    "files_created",
    "files_modified",
    "files_deleted",
    "execution_time_ms",
    "exit_code",
    "resource_usage",
    "environment_snapshot",
    "error_message",
    "metadata",
    "created_at",
    "started_at",
    "completed_at",
}
HELLO_CODE = "print('Hello World!')"
HELLO_STDOUT = "Hello World!\n"
FILE_WRITING_CODE = """\
import json
with open("output.txt", "w") as f:
    f.write("Hello World!\\n")
with open("data.json", "w") as f:
    json.dump({"answer": 42}, f)
print("File created successfully")
"""


class CheckFailed(Exception):
    """A check found the server breaking the contract; the message says how."""


class ServerUnreachable(Exception):
    """No connection could be made to the server: there is no point running more checks."""


@dataclass
class Context:
    """What the checks share: the HTTP client and the job the first checks follow."""

    client: httpx.Client
    poll_deadline_s: float
    hello_job_id: str | None = None
    hello_status: dict[str, Any] | None = None


# --- helpers -------------------------------------------------------------------------------------


def expect(condition: bool, reason: str) -> None:
    if not condition:
        raise CheckFailed(reason)


def short(value: Any, limit: int = 160) -> str:
    """``value`` on one line, cut to ``limit`` characters, for a check's one-line reason."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def request(ctx: Context, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return ctx.client.request(method, path, **kwargs)
    except httpx.ConnectError as exc:
        raise ServerUnreachable(f"cannot connect to {ctx.client.base_url}: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise CheckFailed(f"{method} {path} timed out") from exc


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise CheckFailed(
            f"{response.request.method} {response.request.url.path} did not answer JSON "
            f"(HTTP {response.status_code}): {short(response.text)}"
        ) from exc


def call(ctx: Context, method: str, path: str, expected_status: int = 200, **kwargs: Any) -> Any:
    """Make a request, insist on ``expected_status`` and a JSON body, and return the body."""
    response = request(ctx, method, path, **kwargs)
    expect(
        response.status_code == expected_status,
        f"{method} {path}: expected HTTP {expected_status}, got {response.status_code}: "
        f"{short(response.text)}",
    )
    return json_body(response)


def expect_keys(body: Any, keys: set[str], where: str) -> None:
    expect(isinstance(body, dict), f"{where}: expected a JSON object, got {short(body)}")
    missing = sorted(keys - body.keys())
    expect(not missing, f"{where}: missing {', '.join(missing)}")


def expect_utc_timestamp(value: Any, name: str) -> datetime:
    expect(isinstance(value, str), f"{name} should be an ISO 8601 string, got {value!r}")
    expect(value.endswith(("Z", "+00:00")), f"{name} should be UTC (Z or +00:00): {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CheckFailed(f"{name} is not ISO 8601: {value!r}") from exc
    expect(parsed.utcoffset() == timedelta(0), f"{name} should be UTC: {value!r}")
    return parsed


def expect_uuid4(value: Any, name: str) -> None:
    try:
        parsed = uuid.UUID(str(value))
    except ValueError as exc:
        raise CheckFailed(f"{name} is not a UUID: {value!r}") from exc
    expect(parsed.version == 4, f"{name} is a UUID version {parsed.version}, not 4: {value}")
    expect(str(parsed) == value, f"{name} is not in canonical UUID form: {value!r}")


def submit(ctx: Context, payload: dict[str, Any]) -> str:
    """Submit a job and return its id."""
    body = call(ctx, "POST", "/execute", json=payload)
    expect_keys(body, {"job_id"}, "POST /execute")
    return str(body["job_id"])


def wait_until_final(ctx: Context, job_id: str, deadline_s: float | None = None) -> dict[str, Any]:
    """Poll the job's status every 50 ms until it is final; fail past the deadline."""
    deadline_s = ctx.poll_deadline_s if deadline_s is None else deadline_s
    give_up_at = time.monotonic() + deadline_s
    while True:
        status = call(ctx, "GET", f"/jobs/{job_id}/status")
        expect_keys(status, {"status"}, f"GET /jobs/{job_id}/status")
        expect(status["status"] in ALL_STATUSES, f"unknown status {status['status']!r}")
        if status["status"] in FINAL_STATUSES:
            return status
        expect(
            time.monotonic() < give_up_at,
            f"job {job_id} still {status['status']!r} after {deadline_s:g} s",
        )
        time.sleep(POLL_INTERVAL_S)


def run_job(ctx: Context, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Submit a job, wait for it to finish and return its id and full results."""
    job_id = submit(ctx, payload)
    wait_until_final(ctx, job_id)
    return job_id, call(ctx, "GET", f"/jobs/{job_id}/results")


def expect_completed_with_stdout(result: dict[str, Any], stdout: str) -> None:
    expect(
        result.get("status") == "completed",
        f"status {result.get('status')!r}, error_message {result.get('error_message')!r}, "
        f"stderr {short(result.get('stderr', ''))}",
    )
    expect(result.get("stdout") == stdout, f"stdout {result.get('stdout')!r}, expected {stdout!r}")


def hello_job(ctx: Context) -> str:
    if ctx.hello_job_id is None:
        raise CheckFailed("no job to look at: the submission check failed")
    return ctx.hello_job_id


def finished_hello_job(ctx: Context) -> str:
    job_id = hello_job(ctx)
    if ctx.hello_status is None:
        ctx.hello_status = wait_until_final(ctx, job_id)
    return job_id


# --- checks: each returns a short note for the PASS line or raises CheckFailed --------------------


def check_health(ctx: Context) -> str:
    body = call(ctx, "GET", "/health")
    expect_keys(body, HEALTH_KEYS, "GET /health")
    expect(body["status"] in ("healthy", "degraded"), f"status is {body['status']!r}")
    expect_utc_timestamp(body["timestamp"], "timestamp")
    expect_keys(
        body["system_resources"],
        {"cpu_percent", "memory_percent", "disk_usage_percent"},
        "system_resources",
    )
    expect_keys(
        body["service_checks"],
        {"job_manager", "enhanced_terminal", "async_interpreter"},
        "service_checks",
    )
    return f"{body['status']}, version {body['version']}"


def check_submission(ctx: Context) -> str:
    body = call(ctx, "POST", "/execute", json={"code": HELLO_CODE, "language": "python"})
    expect_keys(body, {"job_id", "status", "estimated_start_time"}, "POST /execute")
    expect_uuid4(body["job_id"], "job_id")
    expect(body["status"] == "pending", f"status is {body['status']!r}, expected 'pending'")
    expect_utc_timestamp(body["estimated_start_time"], "estimated_start_time")
    ctx.hello_job_id = body["job_id"]
    return f"job {body['job_id']}"


def check_status(ctx: Context) -> str:
    job_id = hello_job(ctx)
    first = call(ctx, "GET", f"/jobs/{job_id}/status")
    expect_keys(first, STATUS_KEYS, "GET /jobs/{id}/status")
    expect(first["job_id"] == job_id, f"job_id is {first['job_id']!r}, expected {job_id}")
    expect(first["status"] in ALL_STATUSES, f"unknown status {first['status']!r}")
    expect_utc_timestamp(first["created_at"], "created_at")

    started = time.monotonic()
    final = wait_until_final(ctx, job_id)
    ctx.hello_status = final
    expect(
        final["status"] == "completed",
        f"ended {final['status']!r}: {final.get('error_message')!r}",
    )
    expect_utc_timestamp(final["completed_at"], "completed_at")
    expect(
        type(final["execution_time_ms"]) is int and final["execution_time_ms"] >= 0,
        f"execution_time_ms should be a whole number of ms, got {final['execution_time_ms']!r}",
    )
    waited_ms = (time.monotonic() - started) * 1000
    return f"{first['status']} -> completed after {waited_ms:.0f} ms of polling"


def check_structured_results(ctx: Context) -> str:
    job_id = finished_hello_job(ctx)
    body = call(ctx, "GET", f"/results/{job_id}")
    expect(isinstance(body, dict), f"expected a JSON object, got {short(body)}")
    expect(
        set(body) == STRUCTURED_RESULT_KEYS,
        f"keys are {sorted(body)}, expected exactly {sorted(STRUCTURED_RESULT_KEYS)}",
    )
    expect_completed_with_stdout(body, HELLO_STDOUT)
    expect(body["stderr"] == "", f"stderr is {short(body['stderr'])}")
    expect(body["files"] == [], f"files is {short(body['files'])}, expected []")
    return "exactly status, stdout, stderr, files"


def check_full_results(ctx: Context) -> str:
    job_id = finished_hello_job(ctx)
    body = call(ctx, "GET", f"/jobs/{job_id}/results")
    expect_keys(body, FULL_RESULT_KEYS, "GET /jobs/{id}/results")
    expect(body["job_id"] == job_id, f"job_id is {body['job_id']!r}")
    expect_completed_with_stdout(body, HELLO_STDOUT)
    expect(body["exit_code"] == 0, f"exit_code is {body['exit_code']!r}")
    expect(body["error_message"] is None, f"error_message is {body['error_message']!r}")
    for name in ("files_created", "files_modified", "files_deleted"):
        expect(isinstance(body[name], list), f"{name} is not a list: {short(body[name])}")

    usage = body["resource_usage"]
    expect_keys(usage, {"cpu_percent", "memory_bytes"}, "resource_usage")
    expect_keys(usage["cpu_percent"], {"average"}, "resource_usage.cpu_percent")
    expect_keys(usage["memory_bytes"], {"peak_rss"}, "resource_usage.memory_bytes")
    cpu = usage["cpu_percent"]["average"]
    peak_rss = usage["memory_bytes"]["peak_rss"]
    expect(isinstance(cpu, int | float) and cpu >= 0, f"cpu_percent.average is {cpu!r}")
    expect(isinstance(peak_rss, int) and peak_rss > 0, f"memory_bytes.peak_rss is {peak_rss!r}")
    expect(isinstance(body["environment_snapshot"], dict), "environment_snapshot is not an object")

    metadata = body["metadata"]
    expect_keys(metadata, {"language", "files_created_count", "stdout_length"}, "metadata")
    expect(metadata["language"] == "python", f"metadata.language is {metadata['language']!r}")
    expect(
        metadata["files_created_count"] == 0,
        f"metadata.files_created_count is {metadata['files_created_count']!r}, expected 0",
    )
    expect(
        metadata["stdout_length"] == len(HELLO_STDOUT),
        f"metadata.stdout_length is {metadata['stdout_length']!r}, expected {len(HELLO_STDOUT)}",
    )

    created = expect_utc_timestamp(body["created_at"], "created_at")
    started = expect_utc_timestamp(body["started_at"], "started_at")
    completed = expect_utc_timestamp(body["completed_at"], "completed_at")
    expect(
        created <= started <= completed,
        f"timestamps out of order: created {body['created_at']}, started {body['started_at']}, "
        f"completed {body['completed_at']}",
    )
    return f"exit 0, peak RSS {peak_rss} bytes, {body['execution_time_ms']} ms"


def check_file_tracking(ctx: Context) -> str:
    job_id = submit(ctx, {"code": FILE_WRITING_CODE, "language": "python", "capture_files": True})
    wait_until_final(ctx, job_id)
    structured = call(ctx, "GET", f"/results/{job_id}")
    expect_keys(structured, {"status", "files"}, "GET /results/{id}")
    expect(structured["status"] == "completed", f"job ended {structured['status']!r}")
    files = structured["files"]
    expect(
        isinstance(files, list) and len(files) == 2,
        f"files is {short(files)}, expected two paths",
    )
    expect(all(posixpath.isabs(path) for path in files), f"paths are not absolute: {files}")
    expect(
        sorted(posixpath.basename(path) for path in files) == ["data.json", "output.txt"],
        f"files are {files}, expected .../output.txt and .../data.json",
    )
    expect(
        posixpath.dirname(files[0]) == posixpath.dirname(files[1]),
        f"the two files are in different directories: {files}",
    )

    full = call(ctx, "GET", f"/jobs/{job_id}/results")
    expect_keys(full, {"files_created", "metadata"}, "GET /jobs/{id}/results")
    expect(
        full["files_created"] == files,
        f"files_created {full['files_created']} differs from /results files {files}",
    )
    count = full["metadata"].get("files_created_count")
    expect(count == 2, f"metadata.files_created_count is {count!r}, expected 2")
    return ", ".join(files)


def check_shell_job(ctx: Context) -> str:
    _, result = run_job(ctx, {"code": "echo Hello World!", "language": "shell"})
    expect_completed_with_stdout(result, HELLO_STDOUT)
    return "echo Hello World! printed Hello World!"


def check_resource_usage_is_the_jobs(ctx: Context) -> str:
    """Peak memory must be the job's own, not the server's: small for a trivial job, large for
    one that fills 100 MiB."""
    _, small = run_job(ctx, {"code": "print('Hello World!')", "language": "python"})
    expect_completed_with_stdout(small, HELLO_STDOUT)
    small_rss = small["resource_usage"]["memory_bytes"]["peak_rss"]
    expect(
        isinstance(small_rss, int) and 0 < small_rss < TRIVIAL_JOB_MAX_RSS_BYTES,
        f"peak_rss of print() is {small_rss!r} bytes, but python needs a few MiB: "
        "is it the server's memory?",
    )
    code = "import time\nx = b'x' * (100 * 2**20)\ntime.sleep(0.2)\nprint('Hello World!')"
    _, big = run_job(ctx, {"code": code, "language": "python"})
    expect_completed_with_stdout(big, HELLO_STDOUT)
    big_rss = big["resource_usage"]["memory_bytes"]["peak_rss"]
    expect(
        isinstance(big_rss, int) and 100 * 2**20 <= big_rss < 2**30,
        f"peak_rss of a job filling 100 MiB is {big_rss!r} bytes",
    )
    return f"peak RSS {small_rss / 2**20:.1f} MiB (print) and {big_rss / 2**20:.1f} MiB (100 MiB)"


def check_failure_exit_code(ctx: Context) -> str:
    _, result = run_job(ctx, {"code": "raise SystemExit(3)", "language": "python"})
    expect(result["status"] == "failed", f"status is {result['status']!r}, expected 'failed'")
    expect(result["exit_code"] == 3, f"exit_code is {result['exit_code']!r}, expected 3")
    return "SystemExit(3) -> failed, exit_code 3"


def check_failure_exception(ctx: Context) -> str:
    _, result = run_job(ctx, {"code": "1/0", "language": "python"})
    expect(result["status"] == "failed", f"status is {result['status']!r}, expected 'failed'")
    message = result.get("error_message") or ""
    expect(
        "ZeroDivisionError" in message,
        f"error_message is {message!r}, expected it to name ZeroDivisionError",
    )
    return f"error_message {short(message, 60)!r}"


def check_environment_variables(ctx: Context) -> str:
    _, result = run_job(
        ctx,
        {
            "code": "import os; print(os.environ['GREETING'])",
            "language": "python",
            "environment_variables": {"GREETING": "hi"},
        },
    )
    expect_completed_with_stdout(result, "hi\n")
    return "GREETING=hi reached the job"


def check_metadata_kept(ctx: Context) -> str:
    submitted = {"user": "orchestrator", "task_id": "12345"}
    _, result = run_job(ctx, {"code": HELLO_CODE, "language": "python", "metadata": submitted})
    metadata = result.get("metadata")
    expect(isinstance(metadata, dict), f"metadata is {short(metadata)}")
    lost = {key: value for key, value in submitted.items() if metadata.get(key) != value}
    expect(not lost, f"metadata lost {lost}: got {short(metadata)}")
    return "user and task_id kept"


def check_timeout(ctx: Context) -> str:
    started = time.monotonic()
    job_id = submit(
        ctx, {"code": "import time; time.sleep(30)", "language": "python", "timeout": 1}
    )
    final = wait_until_final(ctx, job_id, deadline_s=10)
    elapsed_s = time.monotonic() - started
    expect(final["status"] == "timeout", f"status is {final['status']!r}, expected 'timeout'")
    return f"timeout after {elapsed_s:.1f} s"


def check_unknown_job(ctx: Context) -> str:
    job_id = str(uuid.uuid4())
    body = call(ctx, "GET", f"/jobs/{job_id}/status", expected_status=404)
    expected = {"detail": f"Job not found: {job_id}"}
    expect(body == expected, f"body is {short(body)}, expected {expected}")
    return "404 Job not found"


def check_malformed_job_id(ctx: Context) -> str:
    body = call(ctx, "GET", "/results/not-a-uuid", expected_status=404)
    expect(
        isinstance(body, dict) and isinstance(body.get("detail"), str),
        f"body is {short(body)}, expected a JSON detail",
    )
    return f"404 {short(body['detail'], 60)!r}"


def check_unknown_language(ctx: Context) -> str:
    response = request(
        ctx, "POST", "/execute", json={"code": "DISPLAY 'HI'.", "language": "cobol-9000"}
    )
    expect(
        response.status_code in (400, 422),
        f"expected HTTP 400 or 422, got {response.status_code}: {short(response.text)}",
    )
    body = json_body(response)
    expect(isinstance(body, dict) and "detail" in body, f"no detail in {short(body)}")
    expect(
        "python" in json.dumps(body["detail"]),
        f"detail does not list the supported languages: {short(body['detail'])}",
    )
    return f"{response.status_code}, detail lists the supported languages"


def check_missing_code(ctx: Context) -> str:
    body = call(ctx, "POST", "/execute", expected_status=422, json={"language": "python"})
    expect(isinstance(body, dict) and "detail" in body, f"no detail in {short(body)}")
    return "422"


def check_malformed_json(ctx: Context) -> str:
    body = call(
        ctx,
        "POST",
        "/execute",
        expected_status=422,
        content=b'{"code": "print(1)", "language": ',
        headers={"Content-Type": "application/json"},
    )
    expect(isinstance(body, dict) and "detail" in body, f"no detail in {short(body)}")
    return "422"


CHECKS: list[tuple[str, Callable[[Context], str]]] = [
    ("health", check_health),
    ("submission", check_submission),
    ("status", check_status),
    ("structured results", check_structured_results),
    ("full results", check_full_results),
    ("file tracking", check_file_tracking),
    ("shell job", check_shell_job),
    ("resource usage is the job's", check_resource_usage_is_the_jobs),
    ("failure: exit code", check_failure_exit_code),
    ("failure: exception", check_failure_exception),
    ("environment variables", check_environment_variables),
    ("metadata kept", check_metadata_kept),
    ("timeout", check_timeout),
    ("error: unknown job", check_unknown_job),
    ("error: malformed job id", check_malformed_job_id),
    ("error: unknown language", check_unknown_language),
    ("error: missing code", check_missing_code),
    ("error: malformed JSON", check_malformed_json),
]


# --- running -------------------------------------------------------------------------------------


def run_checks(ctx: Context) -> tuple[int, int]:
    """Run every check in order, print one line each, and return (passed, failed)."""
    passed = failed = 0
    for name, check in CHECKS:
        try:
            note = check(ctx)
        except CheckFailed as exc:
            failed += 1
            print(f"FAIL  {name}: {exc}", flush=True)
        except ServerUnreachable:
            raise
        except Exception as exc:  # a bug in the server's answers must not stop the other checks
            failed += 1
            print(f"FAIL  {name}: unexpected {type(exc).__name__}: {short(str(exc))}", flush=True)
        else:
            passed += 1
            print(f"PASS  {name}: {note}", flush=True)
    return passed, failed


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="test_structured_api.py",
        description="Check a running interpreter server against its API contract.",
    )
    parser.add_argument(
        "url",
        nargs="?",
        default=os.environ.get("INTERPRETER_URL", DEFAULT_URL),
        help=f"server URL (default: $INTERPRETER_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("INTERPRETER_API_KEY"),
        help="API key sent as X-API-Key (default: $INTERPRETER_API_KEY)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for a job to finish (default: 30)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    print(f"Checking {args.url}", flush=True)
    with httpx.Client(base_url=args.url, headers=headers, timeout=10.0) as client:
        ctx = Context(client=client, poll_deadline_s=args.deadline)
        try:
            passed, failed = run_checks(ctx)
        except ServerUnreachable as exc:
            print(f"FAIL  {exc}", flush=True)
            return 2
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
