"""Health, languages, metrics, the OpenAPI document, logs and retention."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psutil

from interpreter.api.app import create_app
from interpreter.config import Settings
from interpreter.job import JobStatus
from interpreter.store.memory import MemoryStore

SPEC_HEALTH_FIELDS = {
    "status",
    "timestamp",
    "uptime_seconds",
    "version",
    "active_jobs",
    "total_jobs_processed",
    "system_resources",
    "service_checks",
}


class BrokenCountStore(MemoryStore):
    """A store whose health round trip fails."""

    async def count_by_status(self) -> dict[JobStatus, int]:
        raise RuntimeError("the store is down")


# -- health --------------------------------------------------------------------------------------
async def test_health_is_healthy_with_real_figures(api) -> None:
    job_id = await api.submit("print(1)")
    await api.wait(job_id)

    response = await api.client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert SPEC_HEALTH_FIELDS <= set(body)
    assert body["status"] == "healthy"
    assert datetime.fromisoformat(body["timestamp"]).utcoffset() == timedelta(0)
    assert isinstance(body["uptime_seconds"], int) and body["uptime_seconds"] >= 0
    assert isinstance(body["version"], str) and body["version"]
    assert body["active_jobs"] == 0
    assert body["total_jobs_processed"] == 1
    assert set(body["system_resources"]) == {"cpu_percent", "memory_percent", "disk_usage_percent"}
    for value in body["system_resources"].values():
        assert 0 <= value <= 100
    assert body["service_checks"] == {
        "job_manager": "healthy",
        "enhanced_terminal": "healthy",
        "async_interpreter": "healthy",
    }


async def test_health_has_the_spec_fields_and_only_the_queue_beyond(api) -> None:
    body = (await api.client.get("/health")).json()

    assert set(body) == SPEC_HEALTH_FIELDS | {"queue"}
    assert body["queue"] == {
        "backend": "in-process",
        "database": "sqlite",
        "depth": 0,
        "running": 0,
        "workers_alive": None,
    }


async def test_health_counts_running_jobs_as_active(make_api) -> None:
    api = await make_api(max_jobs=1)
    job_id = await api.submit("import time\ntime.sleep(30)", timeout=30)
    await api.wait_for(job_id, {"running"})

    body = (await api.client.get("/health")).json()

    assert body["active_jobs"] == 1
    await api.client.post(f"/jobs/{job_id}/cancel")


async def test_health_is_unhealthy_503_when_the_store_fails(make_api) -> None:
    api = await make_api(store=BrokenCountStore())

    response = await api.client.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["service_checks"]["async_interpreter"] == "unhealthy"
    assert body["service_checks"]["job_manager"] == "healthy"


async def test_health_answers_quickly_without_blocking_on_cpu_sampling(api) -> None:
    started = time.monotonic()
    responses = await asyncio.gather(*(api.client.get("/health") for _ in range(5)))

    assert all(r.status_code == 200 for r in responses)
    assert time.monotonic() - started < 2.0  # one blocking 1 s CPU sample each would be 5 s


async def test_missing_interpreter_makes_health_degraded_and_its_language_unavailable(
    make_api,
) -> None:
    api = await make_api(node_command="/nonexistent/node")

    health = await api.client.get("/health")
    languages = {lang["name"]: lang for lang in (await api.client.get("/languages")).json()}
    submit = await api.client.post("/execute", json={"code": "1", "language": "js"})

    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["service_checks"]["enhanced_terminal"] == "degraded"
    assert languages["javascript"]["available"] is False
    assert languages["python"]["available"] is True
    assert submit.status_code == 422
    assert "javascript" in submit.json()["detail"]


# -- languages -----------------------------------------------------------------------------------
async def test_languages_lists_name_aliases_version_and_availability(api) -> None:
    response = await api.client.get("/languages")

    assert response.status_code == 200
    by_name = {lang["name"]: lang for lang in response.json()}
    assert {"python", "shell", "javascript"} <= set(by_name)
    assert {"bash", "sh"} <= set(by_name["shell"]["aliases"])
    assert {"js", "node"} <= set(by_name["javascript"]["aliases"])
    for lang in by_name.values():
        assert {"name", "aliases", "version", "available"} <= set(lang)
        assert lang["available"] is True
        assert lang["version"]
    assert "3." in by_name["python"]["version"]


async def test_configuration_can_add_a_language(make_api) -> None:
    custom = '{"perl": {"command": ["/usr/bin/perl"], "aliases": ["pl"], "extension": ".pl"}}'
    api = await make_api(languages_json=custom)

    listed = {lang["name"]: lang for lang in (await api.client.get("/languages")).json()}
    body = await api.run('print "perl ", 6 * 7, "\\n";', "pl")

    assert listed["perl"]["aliases"] == ["pl"]
    assert listed["perl"]["available"] is True
    assert body["status"] == "completed", body["stderr"]
    assert body["stdout"] == "perl 42\n"
    assert body["metadata"]["language"] == "perl"


# -- metrics -------------------------------------------------------------------------------------
async def test_metrics_are_prometheus_text_with_request_and_job_series(api) -> None:
    job_id = await api.submit("print(1)")
    await api.wait(job_id)

    response = await api.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "interpreter_http_request_duration_seconds" in text
    assert 'route="/jobs/{job_id}/status"' in text
    assert 'interpreter_jobs_finished_total{status="completed"} 1.0' in text
    assert "interpreter_queue_depth 0.0" in text
    assert "interpreter_running_jobs 0.0" in text
    assert 'interpreter_job_duration_seconds_count{language="python"} 1.0' in text


async def test_metrics_label_requests_by_route_template_not_by_job_id(api) -> None:
    job_id = "550e8400-e29b-41d4-a716-446655440000"
    await api.client.get(f"/jobs/{job_id}/status")
    await api.client.get("/no/such/route")

    text = (await api.client.get("/metrics")).text

    assert job_id not in text
    assert "/no/such/route" not in text


async def test_metrics_count_each_final_status_once(make_api) -> None:
    api = await make_api(max_jobs=1)
    failed = await api.submit("exit 2", "shell")
    running = await api.submit("sleep 30", "shell", timeout=30)
    await api.wait(failed)
    await api.wait_for(running, {"running"})
    await api.client.post(f"/jobs/{running}/cancel")
    follower = await api.submit("true", "shell")
    await api.wait(follower)

    text = (await api.client.get("/metrics")).text

    assert 'interpreter_jobs_finished_total{status="failed"} 1.0' in text
    assert 'interpreter_jobs_finished_total{status="cancelled"} 1.0' in text
    assert 'interpreter_jobs_finished_total{status="completed"} 1.0' in text


# -- OpenAPI -------------------------------------------------------------------------------------
async def test_docs_page_is_served(api) -> None:
    response = await api.client.get("/docs")

    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


async def test_openapi_documents_every_route_and_its_errors(api) -> None:
    response = await api.client.get("/openapi.json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        ("/execute", "post"),
        ("/jobs/{job_id}/status", "get"),
        ("/results/{job_id}", "get"),
        ("/jobs/{job_id}/results", "get"),
        ("/jobs/{job_id}/cancel", "post"),
        ("/jobs/{job_id}", "delete"),
        ("/jobs", "get"),
        ("/languages", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
    }
    documented = {(path, method) for path, ops in paths.items() for method in ops}
    assert expected - documented == set()
    for path in ("/jobs/{job_id}/status", "/results/{job_id}", "/jobs/{job_id}/results"):
        assert "404" in paths[path]["get"]["responses"], path
    assert "409" in paths["/jobs/{job_id}/cancel"]["post"]["responses"]
    execute = paths["/execute"]["post"]
    assert {"200", "413", "422"} <= set(execute["responses"])
    assert execute["requestBody"]["content"]["application/json"]["schema"]


ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
JOB_OPERATIONS = [
    ("/jobs/{job_id}/status", "get"),
    ("/results/{job_id}", "get"),
    ("/jobs/{job_id}/results", "get"),
    ("/jobs/{job_id}/cancel", "post"),
    ("/jobs/{job_id}", "delete"),
    ("/jobs", "get"),
]


def error_schema(operation: dict, code: str) -> object:
    return operation["responses"][code]["content"]["application/json"]["schema"]


async def test_openapi_lists_the_errors_of_execute_and_the_job_routes(api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]

    execute = paths["/execute"]["post"]
    for code in ("400", "413", "422", "429", "503"):
        assert error_schema(execute, code) == ERROR_REF, code
    for path, method in JOB_OPERATIONS:
        operation = paths[path][method]
        assert error_schema(operation, "503") == ERROR_REF, path
        if method == "get":
            assert error_schema(operation, "422") == ERROR_REF, path
        if path != "/jobs":
            assert error_schema(operation, "404") == ERROR_REF, path


async def test_openapi_declares_the_api_key_schemes_where_a_key_is_needed(make_api) -> None:
    api = await make_api(api_keys=["k1"])

    document = (await api.client.get("/openapi.json")).json()

    schemes = document["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"}.items() <= schemes[
        "ApiKeyHeader"
    ].items()
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["BearerKey"].items()
    either = [{"ApiKeyHeader": []}, {"BearerKey": []}]
    paths = document["paths"]
    for path, method in [("/execute", "post"), ("/sandbox", "get"), *JOB_OPERATIONS]:
        operation = paths[path][method]
        assert operation["security"] == either, path
        assert error_schema(operation, "401") == ERROR_REF, path
    for path in ("/health", "/languages", "/metrics"):
        assert "security" not in paths[path]["get"], path
        assert "401" not in paths[path]["get"]["responses"], path


async def test_without_authentication_the_openapi_asks_for_no_key(api) -> None:
    document = (await api.client.get("/openapi.json")).json()

    assert "securitySchemes" not in document.get("components", {})
    assert all(
        "security" not in operation and "401" not in operation["responses"]
        for operations in document["paths"].values()
        for operation in operations.values()
    )


# -- logs ----------------------------------------------------------------------------------------
STANDARD_RECORD_FIELDS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def record_text(record: logging.LogRecord) -> str:
    extras = {k: v for k, v in record.__dict__.items() if k not in STANDARD_RECORD_FIELDS}
    return record.getMessage() + " " + json.dumps(extras, default=str)


async def test_logs_never_hold_submitted_code_or_environment_values(api, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    code = "import os\nprint('CODE-MARKER-7f3a', os.environ['GREETING'])"

    job_id = await api.submit(code, environment_variables={"GREETING": "ENV-MARKER-91bc"})
    await api.wait(job_id)
    body = await api.results(job_id)
    bad = await api.client.post(
        "/execute",
        json={"code": "CODE-MARKER-7f3a", "environment_variables": {"1X": "ENV-MARKER-91bc"}},
    )

    assert body["stdout"] == "CODE-MARKER-7f3a ENV-MARKER-91bc\n"
    assert bad.status_code == 422
    assert caplog.records
    for record in caplog.records:
        text = record_text(record)
        assert "CODE-MARKER-7f3a" not in text, text
        assert "ENV-MARKER-91bc" not in text, text


async def test_job_transitions_are_logged_with_job_id_and_status(api, caplog) -> None:
    caplog.set_level(logging.INFO)

    job_id = await api.submit("print(1)")
    await api.wait(job_id)

    statuses = [
        record.__dict__.get("status")
        for record in caplog.records
        if record.__dict__.get("job_id") == job_id
    ]
    assert "pending" in statuses
    assert "running" in statuses
    assert "completed" in statuses


async def test_each_request_is_logged_with_route_status_and_duration(api, caplog) -> None:
    caplog.set_level(logging.INFO)

    await api.client.get("/jobs/550e8400-e29b-41d4-a716-446655440000/status")

    requests = [r for r in caplog.records if r.__dict__.get("route") == "/jobs/{job_id}/status"]
    assert len(requests) == 1
    assert requests[0].__dict__["status"] == 404
    assert requests[0].__dict__["duration_ms"] >= 0


# -- retention -----------------------------------------------------------------------------------
async def test_expired_jobs_are_deleted_with_their_files_but_unfinished_ones_stay(
    make_api,
) -> None:
    api = await make_api(job_ttl_s=0.5, max_jobs=1)
    finished = await api.submit("open('made.txt', 'w').write('x')\nprint('out')")
    await api.wait(finished)
    full = await api.results(finished)
    workspace = Path(full["working_directory"])
    outputs = api.settings.data_dir / "outputs" / f"{finished}.stdout"
    assert (workspace / "made.txt").exists()
    assert outputs.exists()
    running = await api.submit("import time\ntime.sleep(30)", timeout=30)
    await api.wait_for(running, {"running"})
    pending = await api.submit("print('later')")
    await asyncio.sleep(1.0)

    deleted = await api.app.state.parts.service.cleanup_expired()

    assert deleted == 1
    gone = await api.client.get(f"/jobs/{finished}/status")
    assert gone.status_code == 404
    assert gone.json() == {"detail": f"Job not found: {finished}"}
    assert (await api.client.get(f"/results/{finished}")).status_code == 404
    assert not workspace.exists()
    assert not outputs.exists()
    assert (await api.status(running))["status"] == "running"
    assert (await api.status(pending))["status"] == "pending"
    await api.client.post(f"/jobs/{running}/cancel")
    assert (await api.wait(pending))["status"] == "completed"


async def test_retention_keeps_a_callers_own_working_directory(make_api) -> None:
    api = await make_api(job_ttl_s=0.5)
    body = await api.run("open('keep.txt', 'w').write('x')", working_directory="mine")
    await asyncio.sleep(1.0)

    assert await api.app.state.parts.service.cleanup_expired() == 1

    assert (await api.client.get(f"/jobs/{body['job_id']}/status")).status_code == 404
    assert (api.workspace_root / "mine" / "keep.txt").exists()


async def test_finished_jobs_within_the_ttl_are_kept(api) -> None:
    job_id = await api.submit("print(1)")
    await api.wait(job_id)

    assert await api.app.state.parts.service.cleanup_expired() == 0

    assert (await api.client.get(f"/results/{job_id}")).json()["stdout"] == "1\n"


# -- overload and shutdown -----------------------------------------------------------------------
async def test_too_many_pending_jobs_is_503_with_a_detail(make_api) -> None:
    api = await make_api(max_jobs=1, max_pending_jobs=1)
    running = await api.submit("sleep 30", "shell", timeout=30)
    await api.wait_for(running, {"running"})
    await api.submit("true", "shell")

    response = await api.client.post("/execute", json={"code": "true", "language": "shell"})

    assert response.status_code == 503
    assert "pending" in response.json()["detail"]
    await api.client.post(f"/jobs/{running}/cancel")


async def test_shutdown_cancels_running_jobs_leaves_no_process_and_keeps_pending(
    tmp_path,
) -> None:
    store = MemoryStore()
    settings = Settings(
        data_dir=tmp_path, sandbox="none", max_jobs=1, shutdown_grace_s=0.2, kill_grace_s=0.2
    )
    app = create_app(settings, store=store)
    pid_file = settings.workspaces / "s" / "bg.pid"
    long_job = {
        "code": "sleep 300 &\necho $! > bg.pid\nsleep 300",
        "language": "shell",
        "working_directory": "s",
        "timeout": 60,
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        async with app.router.lifespan_context(app):
            running = (await client.post("/execute", json=long_job)).json()["job_id"]
            pending = (await client.post("/execute", json={"code": "print(1)"})).json()["job_id"]
            for _ in range(1000):
                if pid_file.exists() and pid_file.read_text().strip():
                    break
                await asyncio.sleep(0.01)
            sleep_pid = int(pid_file.read_text())

        refused = await client.post("/execute", json={"code": "print(1)"})

    assert refused.status_code == 503
    assert refused.json()["detail"]
    assert store.jobs[running].status == JobStatus.CANCELLED
    assert "shut down" in (store.jobs[running].error_message or "")
    assert store.jobs[pending].status == JobStatus.PENDING
    for _ in range(500):
        if gone(sleep_pid):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"the job's background sleep {sleep_pid} survived the shutdown")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
