"""Workspace resolution, environment building and the language registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from interpreter.config import Settings
from interpreter.environment import build_environment, invalid_names, redact
from interpreter.errors import InvalidWorkingDirectory, UnsupportedLanguage
from interpreter.languages import LanguageRegistry
from interpreter.workspace import JobPaths, named_directory


def test_relative_working_directory_is_taken_from_the_root(tmp_path: Path) -> None:
    assert named_directory(tmp_path, "a/b", None) == tmp_path / "a" / "b"
    assert named_directory(tmp_path, str(tmp_path / "a"), None) == tmp_path / "a"


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc", "/", ".", "a\x00b"])
def test_working_directory_outside_the_root_is_refused_without_naming_it(
    tmp_path: Path, bad: str
) -> None:
    with pytest.raises(InvalidWorkingDirectory) as info:
        named_directory(tmp_path / "root", bad, None)
    assert "working_directory" in info.value.message
    assert str(tmp_path) not in info.value.message


def test_each_key_names_directories_of_its_own(tmp_path: Path) -> None:
    a, b = "a" * 64, "b" * 64
    mine = named_directory(tmp_path, "project", a)
    assert mine == tmp_path / "tenants" / a[:32] / "project"
    assert named_directory(tmp_path, "project", b) != mine
    # another key's absolute path is just a directory of this key's own
    assert named_directory(tmp_path, str(mine), b) == (
        tmp_path / "tenants" / b[:32] / "tenants" / a[:32] / "project"
    )


def test_a_symlink_in_the_way_is_refused_and_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc", root / "escape")
    paths = JobPaths(tmp_path, root)
    try:
        for name in ("escape", "escape/ssh"):
            with pytest.raises(InvalidWorkingDirectory, match="not a plain directory"):
                paths.check_named(root / name)
        paths.check_named(root / "not" / "yet")  # missing is fine: made at start
        fd = paths.open_named(root / "made" / "here")
        os.close(fd)
        assert (root / "made" / "here").is_dir()
    finally:
        paths.close()


def test_environment_is_minimal_plus_the_callers() -> None:
    env = build_environment(path="/usr/bin", home="/w", tmpdir="/t", extra={"A": "1"})
    assert env == {"PATH": "/usr/bin", "HOME": "/w", "LANG": "C.UTF-8", "TMPDIR": "/t", "A": "1"}


def test_secret_looking_values_are_redacted() -> None:
    shown = redact({"API_KEY": "k", "GITHUB_TOKEN": "t", "db_password": "p", "USER": "me"})
    assert shown == {"API_KEY": "***", "GITHUB_TOKEN": "***", "USER": "me", "db_password": "***"}


def test_invalid_environment_names() -> None:
    assert invalid_names({"OK_1": "", "1BAD": "", "A=B": "", "": ""}) == ["1BAD", "A=B", ""]


def test_registry_resolves_aliases_and_lists_supported_on_unknown() -> None:
    registry = LanguageRegistry.from_settings(Settings())
    assert registry.lookup("bash").name == "shell"
    assert registry.lookup("JS").name == "javascript"
    assert registry.lookup("python").executable == "/usr/bin/python3"
    with pytest.raises(UnsupportedLanguage) as info:
        registry.lookup("cobol")
    assert "python" in info.value.message and "javascript" in info.value.message


def test_registry_is_extensible_from_configuration() -> None:
    settings = Settings(languages_json='{"awk": {"command": ["awk", "-f"], "aliases": ["gawk"]}}')
    registry = LanguageRegistry.from_settings(settings)
    assert registry.lookup("gawk").name == "awk"
    assert registry.lookup("python").name == "python"
