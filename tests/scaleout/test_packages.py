"""Per-job packages across processes: the replica that takes a request resolves its packages
(from the real registry, with uv) and stores the pins in the job; the worker that runs it builds
the environment on its own data directory, or reuses it, and the job imports from it read-only,
its network still off. An API-only replica keeps no environments: it answers 503 for them."""

from __future__ import annotations

import os
import socket
import textwrap
from typing import Any

import httpx
import pytest

from interpreter.packages.uv import PASSED_THROUGH
from tests.acceptance.server import ServerProcess, results, submit, wait_final
from tests.scaleout.conftest import Cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]  # the real registry

PACKAGES = ["six", "idna>=3"]
WAIT_S = 90  # the first job of a worker downloads and installs its wheels

# The versions, where they were imported from, that the environment cannot be written, and what
# the network looks like from inside: a port the test listens on at the host's 127.0.0.1 is not
# reachable, since the job's loopback is its own.
JOB = textwrap.dedent(
    """
    import errno, socket, sys
    import idna, six
    print(six.__version__, idna.__version__)
    print(sys.prefix, six.__file__.startswith("/opt/venv/"), idna.__file__.startswith("/opt/venv/"))
    try:
        open("/opt/venv/written-by-a-job", "w")
    except OSError as exc:
        print("venv", errno.errorcode[exc.errno])
    print("interfaces", sorted(name for _, name in socket.if_nameindex()))
    sock = socket.socket()
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", {port}))
    except OSError as exc:
        print("connect", errno.errorcode[exc.errno])
    else:
        print("connect", "reached the host")
    """
)


def execute(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """The job's full result, once it ended."""
    job_id = submit(client, **body)
    wait_final(client, job_id, WAIT_S)
    result = results(client, job_id)
    assert result["status"] == "completed", result
    return result


def registry_access() -> dict[str, str]:
    """What reaching the registry takes from this machine (its certificates, its proxy): the
    processes start with a minimal environment, and uv gets only these of theirs."""
    return {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}


def start(cluster: Cluster, apis: int = 1) -> tuple[list[ServerProcess], ServerProcess]:
    replicas = [cluster.api(**registry_access()) for _ in range(apis)]
    worker = cluster.worker(**registry_access())
    cluster.wait_workers(1)
    return replicas, worker


def test_a_job_with_packages_sent_to_an_api_replica_imports_them_on_a_worker(
    cluster: Cluster,
) -> None:
    (api,), worker = start(cluster)
    with socket.socket() as listener:  # open on the host's loopback while the job runs
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = execute(api.client(), {"code": JOB.format(port=port), "packages": PACKAGES})

    environment = result["environment"]
    versions = environment["packages"]
    assert sorted(versions) == ["idna", "six"]
    assert int(versions["idna"].split(".")[0]) >= 3
    assert result["stdout"].splitlines() == [
        f"{versions['six']} {versions['idna']}",
        "/opt/venv True True",
        "venv EROFS",
        "interfaces ['lo']",
        "connect ECONNREFUSED",
    ]
    assert environment["cached"] is False and environment["install_ms"] > 0
    assert environment["resolve_ms"] is not None
    # resolved where the request came in, built where the job ran
    assert list((api.data_dir / "packages" / "locks").glob("*.json"))
    assert not (api.data_dir / "packages" / "envs").exists()
    assert (worker.data_dir / "packages" / "envs" / environment["id"]).is_dir()
    assert result["worker"] is not None


def test_a_second_replica_sends_the_same_packages_to_the_environment_the_worker_built(
    cluster: Cluster,
) -> None:
    (first, second), worker = start(cluster, apis=2)
    code = "import idna, six; print(six.__name__, idna.__name__)"

    built = execute(first.client(), {"code": code, "packages": PACKAGES})
    reused = execute(second.client(), {"code": code, "packages": ["idna>=3", "six"]})

    assert built["stdout"] == reused["stdout"] == "six idna\n"
    assert built["environment"]["cached"] is False
    assert reused["environment"]["cached"] is True
    assert reused["environment"]["install_ms"] == 0
    assert reused["environment"]["id"] == built["environment"]["id"]
    assert reused["environment"]["packages"] == built["environment"]["packages"]
    assert reused["environment"]["resolve_ms"] is not None  # the second replica resolved too
    assert list((second.data_dir / "packages" / "locks").glob("*.json"))
    assert [p.name for p in (worker.data_dir / "packages" / "envs").iterdir() if p.is_dir()] == [
        built["environment"]["id"]
    ]


def test_packages_that_do_not_exist_are_a_422_and_make_no_job(cluster: Cluster) -> None:
    (api,), _ = start(cluster)
    client = api.client(timeout=60)

    response = client.post(
        "/execute", json={"code": "print(1)", "packages": ["nonexistent-package-zz-interpreter"]}
    )

    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["type"] == "not_found"
    assert error["loc"] == ["body", "packages"]
    assert "nonexistent-package-zz-interpreter" in error["msg"]
    assert client.get("/jobs").json()["jobs"] == []


def test_an_api_only_replica_has_no_environments_to_show(cluster: Cluster) -> None:
    api = cluster.api()
    client = api.client()

    answers = [
        client.get("/environments"),
        client.post("/environments", json={"packages": ["six"]}),
        client.delete("/environments/0123456789abcdef01234567"),
    ]

    for response in answers:
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert "API-only replica" in response.json()["detail"]
    assert not (api.data_dir / "packages" / "envs").exists()
