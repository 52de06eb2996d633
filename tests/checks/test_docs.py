"""The documentation: README.md stays short and true, docs/ builds with mkdocs --strict, no link
leaves the repository, and docs/configuration.md's table matches the settings the server reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from interpreter.config import Settings

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
CONFIG_PAGE = DOCS / "configuration.md"
CI = REPO / ".ci" / "run"
MKDOCS_YML = REPO / "mkdocs.yml"

README_MAX_LINES = 150
TABLE_HEADER = "| variable | default | meaning |"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
BACKTICKED = re.compile(r"`([^`]*)`")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


# -- README ---------------------------------------------------------------------------------------


def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines"


def fenced_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced code block."""
    return [match.group(0).splitlines()[1:-1] for match in FENCE.finditer(text)]


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    """`.ci/run` is the README's test command, line for line (less comments, `set` and `cd`)."""
    blocks = [b for b in fenced_blocks(README.read_text()) if any("pytest" in x for x in b)]
    assert len(blocks) == 1, f"README.md has {len(blocks)} code blocks that run pytest, not 1"
    ci_lines = [
        line
        for line in CI.read_text().splitlines()
        if line.strip()
        and not line.startswith("#")
        and not line.startswith("set ")
        and not line.startswith('cd "$(dirname')
    ]
    assert ci_lines == blocks[0], "README.md's test command and .ci/run differ"


# -- pages and links ------------------------------------------------------------------------------


def test_every_docs_page_starts_with_a_title() -> None:
    for page in sorted(DOCS.rglob("*.md")):
        first = page.read_text().splitlines()[0] if page.read_text() else ""
        assert first.startswith("# "), f"{page.relative_to(REPO)} starts with {first!r}"


def links_in(text: str) -> list[str]:
    """Link targets of markdown text, outside code blocks and inline code."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return [
        *LINK.findall(prose),
        *REFERENCE.findall(prose),
        *HTML_LINK.findall(prose),
    ]


def link_problem(page: Path, target: str) -> str | None:
    """Why ``target`` (a link on ``page``) does not stay in the repository, or None."""
    if target.startswith(("https://", "http://")):
        return None
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
        return "not an http(s) URL nor a relative link"
    path = target.split("#", 1)[0].split("?", 1)[0]
    if not path:  # an anchor on the same page
        return None
    if path.startswith("/"):
        return "absolute path"
    resolved = (page.parent / path).resolve()
    if not resolved.is_relative_to(REPO):
        return "outside the repository"
    if not resolved.exists():
        return "no such file"
    return None


def test_no_link_leaves_the_repository() -> None:
    problems = []
    for page in markdown_files():
        for target in links_in(page.read_text()):
            problem = link_problem(page, target)
            if problem:
                problems.append(f"{page.relative_to(REPO)}: {target} ({problem})")
    assert not problems, "\n".join(problems)


def test_link_check_catches_links_out_of_the_repository() -> None:
    page = DOCS / "index.md"
    assert link_problem(page, "../../shared/spec/API.md")
    assert link_problem(page, "../README.md") is None
    assert link_problem(page, "missing.md")
    assert link_problem(page, "file:///etc/passwd")
    assert link_problem(page, "https://example.com/x") is None
    assert links_in("see [a](a.md) and `[b](b.md)`\n```\n[c](c.md)\n```\n") == ["a.md"]


@pytest.mark.timeout(150)
def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    """Strict: a broken link or anchor, or a page missing from the nav, fails the build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(MKDOCS_YML),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert (tmp_path / "site" / "index.html").is_file()


# -- the configuration table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    names: tuple[str, ...]
    defaults: tuple[str, ...]  # one cell part per name


def table_rows(text: str) -> list[Row]:
    """The rows of the configuration table (the one under ``TABLE_HEADER``)."""
    lines = text.splitlines()
    assert TABLE_HEADER in lines, f"no table headed {TABLE_HEADER!r}"
    rows: list[Row] = []
    for line in lines[lines.index(TABLE_HEADER) + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 3, f"not 3 cells: {line}"
        names = tuple(re.findall(r"`(INTERPRETER_[A-Z0-9_]+)`", cells[0]))
        assert names and cells[0] == " / ".join(f"`{n}`" for n in names), (
            f"the variable cell is not `INTERPRETER_X` [/ `INTERPRETER_Y` ...]: {cells[0]}"
        )
        defaults = tuple(part.strip() for part in cells[1].split(" / "))
        if len(names) > 1:
            assert len(defaults) == len(names), f"{len(names)} names, defaults {cells[1]!r}"
        else:
            defaults = (cells[1],)
        rows.append(Row(names, defaults))
    return rows


def env_name(name: str, field: FieldInfo) -> str:
    """The variable pydantic-settings reads for a field: its alias, else prefix + name."""
    alias = field.validation_alias or field.alias
    if alias is None:
        return str(Settings.model_config.get("env_prefix", "")) + name.upper()
    assert isinstance(alias, str), f"{name}: teach this test to read alias {alias!r}"
    return alias.upper()


def rendered_default(name: str, field: FieldInfo) -> str | None:
    """How the table shows a plain default; None for a computed one (None or a factory), which
    the table gives as a placeholder."""
    if field.default_factory is not None or field.default in (None, PydanticUndefined):
        return None
    value = field.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float | str | Path):
        return str(value)
    raise AssertionError(f"{name}: teach this test to show a default of {value!r}")


def settings_defaults() -> dict[str, str | None]:
    """Every variable the settings read, with its plain default (None: computed)."""
    return {
        env_name(name, field): rendered_default(name, field)
        for name, field in Settings.model_fields.items()
    }


def table_problems(rows: list[Row], settings: dict[str, str | None]) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for row in rows:
        for name, default in zip(row.names, row.defaults, strict=True):
            if name in seen:
                problems.append(f"{name} is in the table twice")
            seen[name] = default
    for name in sorted(settings.keys() - seen.keys()):
        problems.append(f"{name} is read by Settings but has no row")
    for name in sorted(seen.keys() - settings.keys()):
        problems.append(f"{name} has a row but Settings does not read it")
    for name in sorted(seen.keys() & settings.keys()):
        expected, cell = settings[name], seen[name]
        if not cell:
            problems.append(f"{name}: empty default")
        elif expected is not None:
            shown = BACKTICKED.findall(cell)
            if not shown or shown[0] != expected:
                problems.append(f"{name}: the table says {cell!r}, Settings `{expected}`")
    return problems


def test_configuration_table_matches_settings() -> None:
    problems = table_problems(table_rows(CONFIG_PAGE.read_text()), settings_defaults())
    assert not problems, "docs/configuration.md:\n" + "\n".join(problems)


def test_configuration_check_catches_drift() -> None:
    rows = table_rows(CONFIG_PAGE.read_text())
    settings = settings_defaults()
    assert settings["INTERPRETER_PORT"] == "8000"
    assert settings["INTERPRETER_DEFAULT_TIMEOUT"] == "30"  # the alias, not the field name
    assert settings["INTERPRETER_AUTH"] == "false"
    assert settings["INTERPRETER_DATA_DIR"] is None  # computed: a placeholder is accepted
    added = {**settings, "INTERPRETER_NEW_KNOB": "5"}
    assert table_problems(rows, added) == [
        "INTERPRETER_NEW_KNOB is read by Settings but has no row"
    ]
    removed = {k: v for k, v in settings.items() if k != "INTERPRETER_PORT"}
    assert table_problems(rows, removed) == [
        "INTERPRETER_PORT has a row but Settings does not read it"
    ]
    changed = {**settings, "INTERPRETER_PORT": "8001"}
    assert table_problems(rows, changed) == [
        "INTERPRETER_PORT: the table says '`8000`', Settings `8001`"
    ]
    paired = {**settings, "INTERPRETER_MAX_CPU_TIME_LIMIT": "601"}
    assert len(table_problems(rows, paired)) == 1
    twice = [*rows, Row(("INTERPRETER_PORT",), ("`8000`",))]
    assert table_problems(twice, settings) == ["INTERPRETER_PORT is in the table twice"]
