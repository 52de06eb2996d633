"""Per-job packages through the clients, against a real server that installs them from the real
package registry (small packages only: six, idna): the SDK (sync and async), the console script
and the MCP tools, as their users see them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interpreter.cli.run import EXIT_SANDBOX_ERROR, exit_code_of
from interpreter.client import (
    AsyncClient,
    Client,
    EnvironmentInfo,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    PackageEnvironment,
)
from tests.acceptance.server import ServerProcess
from tests.client.test_cli import cli, one_line
from tests.client.test_mcp import data_of, http_client, stdio_client, text_of

pytestmark = pytest.mark.timeout(240)

VERSIONS = "import six, idna\nprint(six.__version__, idna.__version__)\n"
MISSING = "nonexistent-package-zz-interpreter"


def versions_of(environment: PackageEnvironment | None) -> str:
    assert environment is not None
    return f"{environment.packages['six']} {environment.packages['idna']}\n"


# -- the SDK -------------------------------------------------------------------------------------


def test_run_with_packages_reports_the_environment_and_a_repeat_reuses_it(client: Client) -> None:
    first = client.run(VERSIONS, packages=["six", "idna>=3"])
    assert first.ok, first
    environment = first.environment
    assert isinstance(environment, PackageEnvironment)
    assert first.stdout == versions_of(environment)
    assert environment.resolve_ms is not None and environment.install_ms >= 0
    assert first.raw["environment"]["id"] == environment.id

    again = client.run(VERSIONS, packages=("idna>=3", "six"))  # the same set, another order
    assert again.ok and again.stdout == first.stdout
    assert again.environment is not None
    assert (again.environment.id, again.environment.cached) == (environment.id, True)
    assert again.environment.install_ms == 0

    plain = client.run("print('no packages')")
    assert plain.ok and plain.environment is None


def test_environments_are_built_listed_and_deleted(client: Client) -> None:
    built = client.build_environment(["idna"])
    assert isinstance(built, EnvironmentInfo)
    assert built.requirements == ["idna"] and set(built.packages) == {"idna"}
    assert built.cached is not None and built.resolve_ms is not None
    assert built.install_ms is not None and not built.in_use
    assert client.build_environment(["idna"]).cached is True

    listed = {info.id: info for info in client.environments()}
    assert listed[built.id].packages == built.packages
    assert listed[built.id].cached is None  # a listing says nothing of builds
    assert listed[built.id].size_bytes > 0

    result = client.run("import idna; print(idna.__version__)", packages=["idna"])
    assert result.environment is not None and result.environment.id == built.id
    assert result.environment.cached is True  # built ahead: the job installed nothing

    client.delete_environment(built.id)
    assert built.id not in {info.id for info in client.environments()}
    with pytest.raises(JobNotFound) as missing:
        client.delete_environment(built.id)
    assert missing.value.status_code == 404


def test_an_environment_in_use_cannot_be_deleted(client: Client) -> None:
    job = client.submit(
        "import six, time\nprint('started', flush=True)\ntime.sleep(30)", packages=["six"]
    )
    for event in job.stream():  # its code runs: its packages are installed and held
        assert event.event != "end", "the job ended before it printed"
        if event.event == "stdout":
            break
    (held,) = [info for info in client.environments() if info.in_use]
    with pytest.raises(JobConflict) as conflict:
        client.delete_environment(held.id)
    assert conflict.value.status_code == 409
    job.cancel()
    result = job.wait(timeout=60)
    assert result.status == "cancelled"
    assert result.environment is not None and result.environment.id == held.id


@pytest.mark.parametrize(
    ("packages", "kind"),
    [([MISSING], "not_found"), (["six<1", "six>1"], "unsatisfiable")],
)
def test_packages_that_cannot_be_had_are_an_invalid_request_with_its_kind(
    client: Client, packages: list[str], kind: str
) -> None:
    before = len(client.jobs(limit=500))
    with pytest.raises(InvalidRequest) as refused:
        client.run("print('never')", packages=packages)
    assert (refused.value.status_code, refused.value.kind) == (422, kind)
    assert refused.value.errors[0]["loc"] == ["body", "packages"]
    with pytest.raises(InvalidRequest) as refused:
        client.build_environment(packages)
    assert refused.value.kind == kind
    assert len(client.jobs(limit=500)) == before  # nothing was accepted


def test_one_string_for_packages_is_refused_before_sending(client: Client) -> None:
    with pytest.raises(TypeError, match="list of requirements"):
        client.run("print(1)", packages="six")
    with pytest.raises(TypeError, match="list of requirements"):
        client.build_environment("six")


async def test_the_async_client_runs_with_packages_and_manages_environments(
    aclient: AsyncClient,
) -> None:
    built = await aclient.build_environment(["six"])
    job = await aclient.submit("import six; print(six.__version__)", packages=["six"])
    result = await job.wait(timeout=120)
    assert result.ok and result.environment is not None
    assert result.stdout == f"{built.packages['six']}\n"
    assert result.environment.id == built.id
    ran = await aclient.run("import six; print(six.__version__)", packages=["six"])
    assert ran.stdout == result.stdout
    assert built.id in {info.id for info in await aclient.environments()}
    await aclient.delete_environment(built.id)
    assert built.id not in {info.id for info in await aclient.environments()}
    with pytest.raises(InvalidRequest) as refused:
        await aclient.submit("print('never')", packages=[MISSING])
    assert refused.value.kind == "not_found"


# -- the console script --------------------------------------------------------------------------


def test_cli_run_installs_the_packages_given(server: ServerProcess) -> None:
    done = cli(server, "run", "-p", "six", "--package", "idna", "-c", VERSIONS)
    assert done.returncode == 0, done.stderr
    versions = done.stdout.split()
    assert len(versions) == 2 and all(v[0].isdigit() for v in versions)

    done = cli(server, "--json", "run", "-p", "idna", "-p", "six", "-c", VERSIONS)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    installed = result["environment"]["packages"]
    assert result["stdout"] == f"{installed['six']} {installed['idna']}\n"
    assert result["environment"]["cached"] is True  # the same set as the first run's

    shown = cli(server, "jobs", "show", result["job_id"])
    assert shown.returncode == 0, shown.stderr
    assert f"six {result['environment']['packages']['six']}" in shown.stdout


def test_cli_packages_that_cannot_be_had_are_one_line_and_exit_2(server: ServerProcess) -> None:
    done = cli(server, "run", "-p", MISSING, "-c", "print('never')")
    assert done.returncode == 2
    assert "not found" in one_line(done.stderr) and done.stdout == ""


def test_cli_a_job_whose_packages_failed_exits_as_a_sandbox_error() -> None:
    assert exit_code_of("failed", None, "packages_error", None) == EXIT_SANDBOX_ERROR == 125


def test_cli_environments_build_list_and_delete(server: ServerProcess) -> None:
    built = cli(server, "environments", "build", "six")
    assert built.returncode == 0, built.stderr
    fields = dict(line.split(":", 1) for line in built.stdout.splitlines())
    env_id = fields["id"].strip()
    assert fields["packages"].strip().startswith("six==")
    assert fields["status"].strip() in ("installed", "cached")
    assert fields["resolve"].strip().endswith(" ms") and fields["install"].strip().endswith(" ms")

    again = cli(server, "environments", "build", "six", "--json")
    assert again.returncode == 0, again.stderr
    document: dict[str, Any] = json.loads(again.stdout)
    assert (document["id"], document["cached"], document["requirements"]) == (env_id, True, ["six"])
    assert document["install_ms"] == 0 and document["resolve_ms"] is not None
    version = document["packages"]["six"]

    table = cli(server, "environments", "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ENVIRONMENT", "PACKAGES", "SIZE", "LAST", "USED", "IN", "USE"]
    (row,) = [line.split() for line in lines[1:] if line.startswith(env_id)]
    assert row[1] == f"six=={version}" and row[3] in ("B", "KiB", "MiB") and row[-1] == "no"

    listed = json.loads(cli(server, "--json", "environments", "list").stdout)
    (entry,) = [e for e in listed if e["id"] == env_id]
    assert entry["packages"] == {"six": version} and entry["size_bytes"] > 0
    assert set(entry) == {
        "id",
        "requirements",
        "packages",
        "size_bytes",
        "created_at",
        "last_used_at",
        "in_use",
    }

    deleted = cli(server, "environments", "delete", env_id)
    assert (deleted.returncode, deleted.stderr) == (0, "")
    assert env_id in deleted.stdout and "deleted" in deleted.stdout
    listed = json.loads(cli(server, "environments", "list", "--json").stdout)
    assert env_id not in [e["id"] for e in listed]

    missing = cli(server, "environments", "delete", env_id)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert one_line(missing.stderr) == f"interpreter: Environment not found: {env_id}"


def test_cli_an_environment_in_use_is_shown_and_cannot_be_deleted(
    server: ServerProcess, client: Client
) -> None:
    job = client.submit(
        "import six, time\nprint('started', flush=True)\ntime.sleep(30)", packages=["six"]
    )
    try:
        for event in job.stream():  # its code runs: its packages are installed and held
            assert event.event != "end", "the job ended before it printed"
            if event.event == "stdout":
                break
        listed = json.loads(cli(server, "--json", "environments", "list").stdout)
        (held,) = [entry["id"] for entry in listed if entry["in_use"]]
        table = cli(server, "environments", "list").stdout.splitlines()
        (row,) = [line for line in table if line.startswith(held)]
        assert row.endswith("  yes")

        refused = cli(server, "environments", "delete", held)
        assert (refused.returncode, refused.stdout) == (2, "")
        assert "in use" in one_line(refused.stderr)
    finally:
        job.cancel()
    assert job.wait(timeout=60).status == "cancelled"
    assert held in [info.id for info in client.environments()]  # still there


def test_cli_environments_refusals_are_one_line_and_exit_2(server: ServerProcess) -> None:
    done = cli(server, "environments", "build", MISSING)
    assert (done.returncode, done.stdout) == (2, "")
    assert "not found" in one_line(done.stderr)
    wrong_key = cli(server, "--api-key", "wrong", "environments", "list")
    assert (wrong_key.returncode, wrong_key.stdout) == (2, "")
    assert one_line(wrong_key.stderr).startswith("interpreter: ")
    nowhere = cli(server, "environments", "list", "--server", "http://127.0.0.1:9")
    assert nowhere.returncode == 2
    assert one_line(nowhere.stderr).startswith("interpreter: could not reach")


# -- the MCP tools -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_run_code_installs_packages_and_reports_them(
    server: ServerProcess, transport: str
) -> None:
    connect = stdio_client if transport == "stdio" else http_client
    async with connect(server) as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
        described = tools["run_code"].input_schema["properties"]["packages"]
        assert "PyPI" in described["description"] and "no network" in described["description"]

        run = data_of(
            await mcp.call_tool("run_code", {"code": VERSIONS, "packages": ["six", "idna"]})
        )
        assert run["status"] == "completed", run
        assert run["stdout"] == f"{run['packages']['six']} {run['packages']['idna']}\n"
        plain = data_of(await mcp.call_tool("run_code", {"code": "print(1)"}))
        assert plain["packages"] is None

        refused = await mcp.call_tool("run_code", {"code": "print(1)", "packages": [MISSING]})
        assert refused.is_error
        assert "not found" in text_of(refused) and "Traceback" not in text_of(refused)
