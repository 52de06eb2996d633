"""The client installs and imports without the server's dependencies; the server says, in one
line, that it needs the `server` extra."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.acceptance.server import REPO_ROOT, ServerProcess
from tests.client.conftest import KEY

SERVER_ONLY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "procrastinate",
    "psycopg",
    "pydantic",
    "pydantic_settings",
    "psutil",
    "prometheus_client",
    "limits",
)

# Installed as sitecustomize: every import of a server-only module fails, as without the extra.
BLOCKER = f"""
import sys

BLOCKED = {SERVER_ONLY!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""

CLIENT_RUN = """
import sys
from interpreter.client import Client

with Client() as client:
    result = client.run("print(6 * 7)")
print(result.status, result.stdout, end="")
loaded = sorted({name.partition(".")[0] for name in sys.modules} & set(BLOCKED))
print("server modules loaded:", loaded)
"""


def blocked_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{tmp_path}:{REPO_ROOT}",
        "LANG": "C.UTF-8",
        **extra,
    }


def test_the_client_runs_a_job_without_the_servers_dependencies(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = blocked_env(tmp_path, INTERPRETER_URL=server.url, INTERPRETER_API_KEY=KEY)
    code = f"BLOCKED = {SERVER_ONLY!r}\n{CLIENT_RUN}"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "completed 42\nserver modules loaded: []\n"


def test_the_server_without_its_extra_says_so_in_one_line(tmp_path: Path) -> None:
    env = blocked_env(tmp_path)
    for module in ("interpreter.server", "interpreter.worker"):
        done = subprocess.run(
            [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"{module} needs the server's dependencies"), lines
        assert "install interpreter-server[server]" in lines[0]


def test_the_distributions_only_dependency_is_httpx() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert [dep.split(">")[0] for dep in project["dependencies"]] == ["httpx"]
    assert "interpreter-server[server]" in project["optional-dependencies"]["test"]
    assert "fastapi>=0.115" in project["optional-dependencies"]["server"]


def test_the_client_imports_only_itself_httpx_and_the_standard_library() -> None:
    allowed = {"interpreter", "httpx", *sys.stdlib_module_names}
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / "interpreter" / "client").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = {node.module}
            else:
                continue
            for name in names:
                ours = name == "interpreter" or name.startswith("interpreter.client")
                if not ours and name.partition(".")[0] not in allowed - {"interpreter"}:
                    found.setdefault(path.name, set()).add(name)
    assert found == {}
