"""Workspace resolution, environment building and the language registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from interpreter.config import Settings
from interpreter.environment import build_environment, invalid_names, redact
from interpreter.errors import InvalidWorkingDirectory, UnsupportedLanguage
from interpreter.languages import LanguageRegistry
from interpreter.workspace import resolve_working_directory


def test_relative_working_directory_is_taken_from_the_root(tmp_path: Path) -> None:
    assert resolve_working_directory(tmp_path, "a/b") == tmp_path.resolve() / "a" / "b"


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc", "/", "."])
def test_working_directory_outside_the_root_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidWorkingDirectory) as info:
        resolve_working_directory(tmp_path / "root", bad)
    assert "working_directory" in info.value.message


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc", root / "escape")
    with pytest.raises(InvalidWorkingDirectory, match="outside the workspace root"):
        resolve_working_directory(root, "escape")
    with pytest.raises(InvalidWorkingDirectory):
        resolve_working_directory(root, str(root / "escape" / "ssh"))


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
