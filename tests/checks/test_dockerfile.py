"""The Dockerfile and the spec's test script, checked without a Docker engine or a server."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from interpreter.sandbox.container import DOCKER_FLAGS

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CONFIG_TABLE = REPO / "docs" / "configuration.md"
CONFIG = REPO / "interpreter" / "config.py"
SCRIPT = REPO / "test_structured_api.py"
ENV_NAME = re.compile(r"\bINTERPRETER_[A-Z][A-Z0-9_]*\b")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, CMD, ...
    arguments: str  # continuation lines joined with a space
    line: int  # where the instruction starts, 1-based


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining ``\\`` continuations and dropping comments."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines may also sit inside a continuation
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            keyword, _, arguments = " ".join(pending).partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    assert not pending, f"Dockerfile ends inside a continuation started on line {start}"
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    assert DOCKERFILE.is_file(), f"no Dockerfile at {DOCKERFILE}"
    return parse_dockerfile(DOCKERFILE.read_text())


def only(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [instruction for instruction in instructions if instruction.keyword == keyword]


def without_flags(arguments: str) -> list[str]:
    """The arguments of COPY/FROM/HEALTHCHECK without their leading ``--flag=value`` options."""
    words = shlex.split(arguments)
    while words and words[0].startswith("--"):
        words.pop(0)
    return words


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = '# syntax comment\nFROM a\nRUN one \\\n    # inside\n    two\n\nCMD ["x"]\n'
    assert parse_dockerfile(text) == [
        Instruction("FROM", "a", 2),
        Instruction("RUN", "one two", 3),
        Instruction("CMD", '["x"]', 7),
    ]


def test_base_image_is_python_311(instructions: list[Instruction]) -> None:
    froms = only(instructions, "FROM")
    assert froms, "the Dockerfile has no FROM"
    image = without_flags(froms[-1].arguments)[0]
    assert image.startswith("python:3.11"), f"the final stage is built FROM {image}"


def test_cmd_starts_the_server_in_exec_form(instructions: list[Instruction]) -> None:
    cmds = only(instructions, "CMD")
    assert cmds, "the Dockerfile has no CMD"
    try:
        command = json.loads(cmds[-1].arguments)
    except json.JSONDecodeError:
        pytest.fail(f"CMD is in shell form, not exec form: {cmds[-1].arguments}")
    assert command == ["python", "-m", "interpreter.server"]
    assert not only(instructions, "ENTRYPOINT"), "an ENTRYPOINT would wrap the CMD"


def test_exposes_port_8000(instructions: list[Instruction]) -> None:
    ports = [port for expose in only(instructions, "EXPOSE") for port in expose.arguments.split()]
    assert "8000" in ports or "8000/tcp" in ports, f"EXPOSE lists {ports}"


def test_healthcheck_probes_the_health_endpoint(instructions: list[Instruction]) -> None:
    checks = only(instructions, "HEALTHCHECK")
    assert checks, "the Dockerfile has no HEALTHCHECK"
    words = without_flags(checks[-1].arguments)
    assert words[0] == "CMD", f"HEALTHCHECK {checks[-1].arguments}"
    assert "/health" in checks[-1].arguments
    assert "127.0.0.1" in checks[-1].arguments or "localhost" in checks[-1].arguments


def test_server_runs_as_root_for_the_sandbox(instructions: list[Instruction]) -> None:
    """Per-job cgroups, mounts and the switch to each job's uid need root; jobs never run as it."""
    users = only(instructions, "USER")
    if users:
        user = users[-1].arguments.split(":")[0]
        assert user in ("root", "0"), f"USER {users[-1].arguments}: the sandbox needs root"


def test_image_has_the_unprivileged_user_api_replicas_run_as(
    instructions: list[Instruction],
) -> None:
    runs = " ".join(run.arguments for run in only(instructions, "RUN"))
    assert re.search(r"useradd\b[^&;]*--uid 10001\b", runs), "no user 10001 for API replicas"
    data_dir = env_settings(instructions)["INTERPRETER_DATA_DIR"]
    assert re.search(rf"chown \S*interpreter\S* {re.escape(data_dir)}", runs), (
        f"{data_dir} is not writable by the user API replicas run as"
    )


def test_image_defaults_to_the_sandbox(instructions: list[Instruction]) -> None:
    env = env_settings(instructions)
    assert env.get("INTERPRETER_SANDBOX", "bwrap") == "bwrap", (
        f"the image sets INTERPRETER_SANDBOX={env['INTERPRETER_SANDBOX']}: jobs would run "
        "unsandboxed, as the server"
    )


def installed_packages(instructions: list[Instruction]) -> set[str]:
    """Every package an ``apt-get install`` of a RUN names."""
    packages: set[str] = set()
    for run in only(instructions, "RUN"):
        for command in re.split(r"&&|;|\|\|", run.arguments):
            words = shlex.split(command)
            if words[:2] == ["apt-get", "install"]:
                packages.update(word for word in words[2:] if not word.startswith("-"))
    return packages


def test_image_installs_what_the_sandbox_and_the_languages_need(
    instructions: list[Instruction],
) -> None:
    packages = installed_packages(instructions)
    # bubblewrap: the sandbox; util-linux: setpriv, the switch to each job's uid; e2fsprogs:
    # mkfs.ext4, the filesystem under each job's working directory; nodejs: javascript jobs.
    missing = {"bubblewrap", "util-linux", "e2fsprogs", "nodejs"} - packages
    assert not missing, f"the image does not install {sorted(missing)} (it installs {packages})"


def test_header_gives_the_docker_run_line_that_runs_the_sandbox() -> None:
    header: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# ").rstrip("\\ "))
    text = " ".join(header)
    assert f"docker run {DOCKER_FLAGS}" in text, "the header's `docker run` lacks the flags"
    assert "docs/containers.md" in text
    assert "INTERPRETER_SANDBOX=none" in text, "the header does not say what turns it off"


def test_server_starts_in_a_directory_nothing_is_copied_into(
    instructions: list[Instruction],
) -> None:
    """``python -m`` imports from the working directory first: neither the copied sources nor
    the data directory nor a home directory may be it."""
    workdir, copied_into = "/", set()
    for instruction in instructions:
        if instruction.keyword == "WORKDIR":
            workdir = str(Path(workdir, instruction.arguments))
        elif instruction.keyword == "COPY":
            destination = without_flags(instruction.arguments)[-1]
            copied_into.add(str(Path(workdir, destination)).rstrip("/"))
    data_dir = env_settings(instructions)["INTERPRETER_DATA_DIR"]
    for directory in (*copied_into, data_dir):
        assert not (workdir == directory or directory.startswith(workdir.rstrip("/") + "/")), (
            f"the server starts in {workdir}, which holds {directory}"
        )
    assert not workdir.startswith("/home/"), f"the server starts in {workdir}, not root's"


def test_data_dir_is_a_volume(instructions: list[Instruction]) -> None:
    env = env_settings(instructions)
    volumes = " ".join(volume.arguments for volume in only(instructions, "VOLUME"))
    assert env.get("INTERPRETER_DATA_DIR"), "INTERPRETER_DATA_DIR is not set"
    assert env["INTERPRETER_DATA_DIR"] in volumes, f"VOLUME {volumes}"


def test_every_copy_source_exists(instructions: list[Instruction]) -> None:
    copies = [copy for copy in only(instructions, "COPY") if "--from" not in copy.arguments]
    assert copies, "the Dockerfile copies nothing"
    for copy in copies:
        if copy.arguments.lstrip().startswith("["):
            words = json.loads(copy.arguments)
        else:
            words = without_flags(copy.arguments)
        sources = words[:-1]
        assert sources, f"COPY on line {copy.line} has no source"
        for source in sources:
            assert list(REPO.glob(source.rstrip("/"))), f"COPY source {source} is not in the repo"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    assert DOCKERIGNORE.is_file(), "no .dockerignore"
    patterns = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    for excluded in (".venv", ".git", "data"):
        assert excluded in patterns, f".dockerignore does not exclude {excluded}"
    for needed in ("pyproject.toml", "README.md", "interpreter"):
        assert needed not in patterns, f".dockerignore excludes {needed}, which the image needs"


def env_settings(instructions: list[Instruction]) -> dict[str, str]:
    """Every name an ENV sets, in both the ``A=b C=d`` and the legacy ``A b`` forms."""
    settings: dict[str, str] = {}
    for env in only(instructions, "ENV"):
        words = shlex.split(env.arguments)
        if "=" in words[0]:
            for word in words:
                name, _, value = word.partition("=")
                settings[name] = value
        else:
            settings[words[0]] = " ".join(words[1:])
    return settings


def documented_in_table() -> set[str]:
    """The names in docs/configuration.md's table (table rows only, not prose)."""
    lines = CONFIG_TABLE.read_text().splitlines()
    rows = [line for line in lines if line.lstrip().startswith("|")]
    return {name for row in rows for name in ENV_NAME.findall(row)}


def declared_in_config() -> set[str]:
    """The names ``interpreter/config.py`` reads: literal names, and prefix + field name."""
    source = CONFIG.read_text()
    names = set(ENV_NAME.findall(source))
    if 'env_prefix="INTERPRETER_"' not in source.replace("'", '"'):
        return names
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.AnnAssign) or not isinstance(
                statement.target, ast.Name
            ):
                continue
            if statement.target.id.startswith("_") or statement.target.id == "model_config":
                continue
            alias = field_alias(statement.value)
            names.add(alias or "INTERPRETER_" + statement.target.id.upper())
    return names


def field_alias(value: ast.expr | None) -> str | None:
    """The ``alias=``/``validation_alias=`` of a ``Field(...)`` default, if it is a literal."""
    if not isinstance(value, ast.Call):
        return None
    for keyword in value.keywords:
        if keyword.arg in ("alias", "validation_alias") and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return None


def test_declared_config_includes_settings_fields() -> None:
    names = declared_in_config()
    assert "INTERPRETER_HOST" in names and "INTERPRETER_PORT" in names, sorted(names)


def test_every_interpreter_env_the_image_sets_is_documented(
    instructions: list[Instruction],
) -> None:
    documented, source = documented_in_table(), "docs/configuration.md"
    assert documented, "docs/configuration.md's table names no INTERPRETER_* variable"
    set_by_image = {name for name in env_settings(instructions) if name.startswith("INTERPRETER_")}
    assert set_by_image, "the image sets no INTERPRETER_* variable"
    unknown = sorted(set_by_image - documented)
    assert not unknown, f"the Dockerfile sets {unknown}, which {source} does not document"


def test_structured_api_script_compiles() -> None:
    compile(SCRIPT.read_text(), str(SCRIPT), "exec")


def test_structured_api_script_help_exits_zero() -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "usage:" in completed.stdout
