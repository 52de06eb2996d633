"""Per-job Python packages through a real server: real uv, the real package registry (small
packages only), real bubblewrap. The job's network stays off while it imports them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.server import ServerProcess

pytestmark = pytest.mark.timeout(240)

WAIT = {"wait": "60"}
IMPORTS = (
    "import socket, sys, six, idna\n"
    "print(six.__version__, idna.__version__, sys.prefix)\n"
    "try:\n"
    "    socket.create_connection(('1.1.1.1', 443), timeout=2)\n"
    "    print('network: open')\n"
    "except OSError as exc:\n"
    "    print('network: closed', type(exc).__name__)\n"
)


def run(client: httpx.Client, code: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/execute", params=WAIT, json={"code": code, "language": "python", **body}, timeout=90
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert result["status"] not in ("pending", "running"), result
    return result


def environments(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/environments")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def test_a_job_imports_its_packages_with_the_network_off_and_a_repeat_reuses_them(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    client = server.client()

    first = run(client, IMPORTS, packages=["six", "idna>=3"])
    assert first["status"] == "completed", first
    env = first["environment"]
    versions, _, rest = first["stdout"].partition(" /opt/venv\n")
    assert versions == f"{env['packages']['six']} {env['packages']['idna']}"
    assert rest == "network: closed OSError\n"  # no interface but loopback
    assert env["cached"] is False and env["install_ms"] > 0 and env["resolve_ms"] > 0

    again = run(client, IMPORTS, packages=["idna>=3", "six"])  # the same set, another order
    assert again["status"] == "completed", again
    assert again["stdout"] == first["stdout"]
    assert again["environment"]["id"] == env["id"]
    assert again["environment"]["cached"] is True and again["environment"]["install_ms"] == 0
    # resolved from the kept lock: no registry round trip
    assert again["environment"]["resolve_ms"] < first["environment"]["resolve_ms"]

    listed = environments(client)
    assert [(e["id"], e["packages"], e["in_use"]) for e in listed] == [
        (env["id"], env["packages"], False)
    ]
    assert listed[0]["requirements"] == ["idna>=3", "six"]

    plain = run(client, "import six")  # a job without packages has none of them
    assert plain["status"] == "completed" or "ModuleNotFoundError" in plain["stderr"]
    assert plain["environment"] is None


def test_a_job_cannot_write_into_its_environment(
    start_server: Callable[..., ServerProcess],
) -> None:
    client = start_server().client()
    code = (
        "import six, pathlib\n"
        "try:\n"
        "    pathlib.Path(six.__file__).write_text('poisoned')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )
    first = run(client, code, packages=["six"])
    assert first["stdout"] == "refused 30\n", first  # EROFS: bound read-only
    again = run(client, "import six; print(six.__version__)", packages=["six"])
    assert again["stdout"] == f"{again['environment']['packages']['six']}\n"


UNRESOLVABLE = [
    (["nonexistent-package-zz-interpreter"], "not_found", "not found in the package registry"),
    (["six<1", "six>1"], "unsatisfiable", "six<1 and six>1"),
    (["six==99.0"], "not_found", "there is no version of six==99.0"),
    (["docopt"], "no_wheel", "no usable wheels"),  # a source-only package
]
REFUSED = [
    ("six @ https://example.org/six.whl", "no URL"),
    ("https://example.org/six.whl", "no URL"),
    ("-r /etc/machine-id", "options are not accepted"),
    ("--index-url=http://127.0.0.1:9/", "options are not accepted"),
    ("six; python_version > '3'", "marker"),
    ("six\n-r /etc/passwd", "no URL"),
    ("./local/path", "not valid"),
    ("", "empty entry"),
]


def test_packages_that_cannot_be_resolved_are_a_422_and_nothing_runs(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    client = server.client()
    for packages, kind, words in UNRESOLVABLE:
        response = client.post(
            "/execute", json={"code": "print('never')", "packages": packages}, timeout=90
        )
        assert response.status_code == 422, (packages, response.text)
        body = response.json()
        assert body["errors"][0]["type"] == kind, packages
        assert words in body["detail"], packages
        assert str(server.data_dir) not in body["detail"]
    assert client.get("/jobs").json()["jobs"] == []
    # uv never built a source distribution: no build's traces in its cache
    cache = server.data_dir / "packages" / "cache"
    assert not [p for p in cache.rglob("*") if p.name.endswith((".egg-info", "setup.py"))]


def test_an_entry_that_is_not_a_plain_requirement_is_refused_before_uv_runs(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    client = server.client()
    for entry, words in REFUSED:
        response = client.post("/execute", json={"code": "print('never')", "packages": [entry]})
        assert response.status_code == 422, (entry, response.text)
        assert words in response.json()["detail"], entry
    assert not (server.data_dir / "packages" / "cache").exists()  # the registry was never asked
    assert client.get("/jobs").json()["jobs"] == []


def test_too_many_packages_and_packages_for_another_language_are_refused(
    start_server: Callable[..., ServerProcess],
) -> None:
    client = start_server(INTERPRETER_MAX_PACKAGES="2").client()
    response = client.post("/execute", json={"code": "1", "packages": ["a", "b", "c"]})
    assert response.status_code == 422
    assert "the maximum is 2" in response.json()["detail"]
    response = client.post(
        "/execute", json={"code": "echo hi", "language": "shell", "packages": ["six"]}
    )
    assert response.status_code == 422
    assert "Python jobs only" in response.json()["detail"]


def test_two_concurrent_requests_for_one_set_build_it_once(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    results: list[dict[str, Any]] = []

    def submit() -> None:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=90) as client:
            code = "import attrs; print(attrs.__version__)"
            results.append(run(client, code, packages=["attrs"]))

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 2
    assert {r["status"] for r in results} == {"completed"}
    assert len({r["environment"]["id"] for r in results}) == 1
    assert sorted(r["environment"]["cached"] for r in results) == [False, True]
    built = [
        line for line in server.stderr_path.read_text().splitlines() if "environment built" in line
    ]
    assert len(built) == 1, built


def test_an_install_that_fails_ends_the_job_failed_with_packages_error(
    start_server: Callable[..., ServerProcess],
) -> None:
    # the smallest cap an environment may have: pip's files alone are larger
    client = start_server(INTERPRETER_PACKAGES_MAX_ENV_BYTES=str(2**20)).client()
    result = run(client, "print('never')", packages=["pip"])
    assert result["status"] == "failed"
    assert result["termination_reason"] == "packages_error"
    assert "INTERPRETER_PACKAGES_MAX_ENV_BYTES" in result["error_message"]
    assert result["stdout"] == ""
    assert environments(client) == []  # nothing of it kept


def test_an_install_that_takes_too_long_ends_the_job_failed(
    start_server: Callable[..., ServerProcess],
) -> None:
    client = start_server(INTERPRETER_PACKAGES_INSTALL_TIMEOUT="0.001").client()
    result = run(client, "print('never')", packages=["six"])
    assert result["status"] == "failed"
    assert result["termination_reason"] == "packages_error"
    assert "INTERPRETER_PACKAGES_INSTALL_TIMEOUT" in result["error_message"]


def test_default_packages_serve_jobs_that_name_none(
    start_server: Callable[..., ServerProcess],
) -> None:
    client = start_server(INTERPRETER_DEFAULT_PACKAGES="six").client()
    give_up = time.monotonic() + 60
    while not environments(client):  # built at start, before any job asks
        assert time.monotonic() < give_up, "the default packages were not built at start"
        time.sleep(0.1)
    result = run(client, "import six; print(six.__version__)")
    assert result["status"] == "completed", result
    assert result["environment"]["cached"] is True
    assert result["environment"]["packages"] == {"six": result["stdout"].strip()}
    assert result["environment"]["resolve_ms"] is None
    # forked from warm parents of the default environment, which imported its modules
    probe = "import sys; print(open('/proc/1/cmdline', 'rb').read().split(b'\\0')[1].decode(), "
    probe += "'six' in sys.modules)"
    give_up = time.monotonic() + 30
    while (warm := run(client, probe))["stdout"] != "(warm leader) True\n":
        assert time.monotonic() < give_up, f"no job of the default environment ran warm: {warm}"
        time.sleep(0.2)
    own = run(client, "import six", packages=["idna"])  # its own set replaces the default
    assert own["status"] == "completed" or "No module named 'six'" in own["stderr"]
    assert own["environment"]["packages"].keys() == {"idna"}
    shell = run(client, "echo plain", language="shell")
    assert shell["environment"] is None


def test_environments_are_built_ahead_removed_and_spared_while_in_use(
    start_server: Callable[..., ServerProcess],
) -> None:
    client = start_server().client(timeout=90)
    built = client.post("/environments", json={"packages": ["six"]})
    assert built.status_code == 201, built.text
    env = built.json()
    assert env["cached"] is False and env["packages"].keys() == {"six"}
    again = client.post("/environments", json={"packages": ["six"]}).json()
    assert again["cached"] is True and again["id"] == env["id"]

    job = client.post(
        "/execute",
        json={"code": "import six, time; time.sleep(30)", "packages": ["six"], "timeout": 60},
    ).json()["job_id"]
    give_up = time.monotonic() + 30
    while client.get(f"/jobs/{job}/status").json()["status"] != "running":
        assert time.monotonic() < give_up
        time.sleep(0.05)
    time.sleep(0.5)  # running: its environment is held from before it starts
    in_use = client.delete(f"/environments/{env['id']}")
    assert in_use.status_code == 409, in_use.text
    assert [e["in_use"] for e in environments(client)] == [True]

    client.post(f"/jobs/{job}/cancel")
    give_up = time.monotonic() + 30
    while client.delete(f"/environments/{env['id']}").status_code == 409:
        assert time.monotonic() < give_up
        time.sleep(0.1)
    assert environments(client) == []
    missing = client.delete(f"/environments/{env['id']}")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    assert client.delete("/environments/..%2F..%2Fetc").status_code == 404


def test_eviction_under_the_cap_spares_environments_in_use(
    start_server: Callable[..., ServerProcess],
) -> None:
    # a cap every environment passes: each build evicts all it may
    client = start_server(INTERPRETER_PACKAGES_CACHE_BYTES=str(2**20)).client(timeout=90)
    held = client.post(
        "/execute",
        json={"code": "import six, time; time.sleep(30)", "packages": ["six"], "timeout": 60},
    ).json()["job_id"]
    give_up = time.monotonic() + 60
    while not (listed := environments(client)) or not listed[0]["in_use"]:  # built, then held
        assert time.monotonic() < give_up
        time.sleep(0.05)
    six_env = listed[0]
    assert six_env["packages"].keys() == {"six"}

    assert client.post("/environments", json={"packages": ["idna"]}).status_code == 201
    time.sleep(2)  # eviction runs after the build
    ids = [e["id"] for e in environments(client)]
    assert six_env["id"] in ids  # in use: spared

    client.post(f"/jobs/{held}/cancel")
    give_up = time.monotonic() + 30
    while client.get(f"/jobs/{held}/status").json()["status"] == "running":
        assert time.monotonic() < give_up
        time.sleep(0.05)
    assert client.post("/environments", json={"packages": ["attrs"]}).status_code == 201
    give_up = time.monotonic() + 30
    while six_env["id"] in [e["id"] for e in environments(client)]:
        assert time.monotonic() < give_up, "an unused environment was not evicted"
        time.sleep(0.1)


def _local_index(root: Path, marker: Path) -> str:
    """A package index on disk holding one wheel whose ``.pth`` file writes ``marker`` when a
    Python starts with it on its path: what a hostile package could ship."""
    import base64
    import hashlib
    import zipfile

    name = "evil_pth-1.0-py3-none-any.whl"
    files = {
        "evil_pth.pth": f"import os; open('{marker}-%d' % os.getuid(), 'w').write('ran')\n",
        "evil_pth/__init__.py": "X = 'imported'\n",
        "evil_pth-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: evil-pth\nVersion: 1.0\n",
        "evil_pth-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    project = root / "simple" / "evil-pth"
    project.mkdir(parents=True)
    record = []
    with zipfile.ZipFile(project / name, "w") as wheel:
        for path, content in files.items():
            wheel.writestr(path, content)
            digest = hashlib.sha256(content.encode()).digest()
            encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            record.append(f"{path},sha256={encoded},{len(content)}")
        record.append("evil_pth-1.0.dist-info/RECORD,,")
        wheel.writestr("evil_pth-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    (project / "index.html").write_text(f'<a href="{name}">{name}</a>')
    (root / "simple" / "index.html").write_text('<a href="evil-pth/">evil-pth</a>')
    return f"file://{root / 'simple'}"


def test_nothing_a_package_ships_runs_on_the_host_while_it_is_installed(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    marker = tmp_path / "ran-on-the-host"
    index = _local_index(tmp_path / "index", marker)
    server = start_server(INTERPRETER_PACKAGES_INDEX_URL=index)
    client = server.client()
    result = run(client, "import evil_pth; print(evil_pth.X)", packages=["evil-pth"])
    assert result["status"] == "completed", result
    assert result["stdout"] == "imported\n"  # the job has it; its .pth ran in the sandbox only
    assert result["environment"]["packages"] == {"evil-pth": "1.0"}
    assert not list(tmp_path.glob("ran-on-the-host*")), "a wheel's .pth ran on the host"
    # its bytecode was compiled all the same (by the base interpreter, without site)
    env = server.data_dir / "packages" / "envs" / result["environment"]["id"]
    assert list(env.glob("lib/python3*/site-packages/evil_pth/__pycache__/__init__.*.pyc"))
