"""Which directories the sandbox shows so that an operator's interpreter runs there (a venv's
python: the venv and its base interpreter's prefix), and how a language whose trial run failed
reads in the registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from interpreter.config import Settings
from interpreter.errors import ConfigurationError, LanguageUnavailable
from interpreter.languages import LanguageRegistry, Trial
from interpreter.sandbox import bwrap


def make_venv(root: Path, home: str, target: str = "/usr/bin/python3") -> Path:
    """What ``python -m venv`` leaves: ``pyvenv.cfg`` naming the base's directory, and
    ``bin/python`` a symlink to the base interpreter."""
    (root / "bin").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text(f"home = {home}\ninclude-system-site-packages = false\n")
    (root / "bin" / "python").symlink_to(target)
    return root / "bin" / "python"


def test_a_venv_is_found_from_its_python_before_any_symlink_is_followed(tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv", "/usr/bin")

    assert bwrap.venv_root(str(python)) == tmp_path / "venv"
    assert bwrap.venv_root("/usr/bin/python3") is None
    (tmp_path / "tool").mkdir()
    assert bwrap.venv_root(str(tmp_path / "tool" / "python")) is None


def test_a_venv_over_a_system_python_binds_the_venv_alone(tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv", "/usr/bin")

    assert bwrap._prefixes([str(python), "/bin/bash"]) == [str(tmp_path / "venv")]


def test_a_venv_over_a_python_outside_the_system_binds_both(tmp_path: Path) -> None:
    base = tmp_path / "pyenv" / "versions" / "3.12"
    (base / "bin").mkdir(parents=True)
    (base / "bin" / "python3.12").write_text("")
    python = make_venv(tmp_path / "venv", str(base / "bin"), str(base / "bin" / "python3.12"))

    assert bwrap._prefixes([str(python)]) == sorted([str(base), str(tmp_path / "venv")])


def test_a_prefix_inside_another_is_shown_by_the_outer_bind(tmp_path: Path) -> None:
    python = make_venv(tmp_path / "opt" / "venvs" / "a", "/usr/bin")
    (tmp_path / "opt" / "bin").mkdir()

    found = bwrap._prefixes([str(python), str(tmp_path / "opt" / "bin" / "tool")])

    assert found == [str(tmp_path / "opt")]


def test_a_prefix_holding_the_servers_own_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    tool = str(tmp_path / "bin" / "python")

    with pytest.raises(ConfigurationError, match="holds .*data"):
        bwrap._prefixes([tool], keep_out=[tmp_path / "data"])
    with pytest.raises(ConfigurationError, match="would show to every job"):
        bwrap._prefixes(["/python"], keep_out=[tmp_path / "data"])
    assert bwrap._prefixes([tool], keep_out=[Path("/var/lib/interpreter")]) == [str(tmp_path)]


def test_prefixes_are_bound_after_the_private_tmp_so_one_under_tmp_shows() -> None:
    args = bwrap.static_args(2**20, Path("/run/i/etc"), [("/run/i/prefix/0", "/tmp/x/venv")])

    bind = args.index("/run/i/prefix/0")
    assert args[bind - 1 : bind + 2] == ["--ro-bind", "/run/i/prefix/0", "/tmp/x/venv"]
    assert args.index("/tmp") < bind and args.index("/dev/shm") < bind


# -- the registry's check ------------------------------------------------------------------------
def registry(tmp_path: Path) -> LanguageRegistry:
    return LanguageRegistry.from_settings(Settings(data_dir=tmp_path / "data"))


def test_a_language_whose_trial_fails_is_unavailable_saying_why(tmp_path: Path) -> None:
    languages = registry(tmp_path)
    failure = "bwrap: execvp /opt/py/bin/python: No such file or directory"

    def run(name: str, argv: tuple[str, ...]) -> Trial:
        assert argv[-1] == "--version" and os.path.isabs(argv[0])
        if name == "python":
            return Trial(1, "", f"{failure}\n")
        return Trial(0, f"{name} 1.0\nmore\n", "")

    languages.check(run)

    assert languages.problems() == {"python": failure}
    assert not languages.languages["python"].available
    assert languages.languages["shell"].available
    assert languages.versions["shell"] == "shell 1.0"
    with pytest.raises(LanguageUnavailable, match=f"cannot run on this host: {failure}"):
        languages.require_available("py")
    assert languages.require_available("sh").name == "shell"


async def test_a_checked_registry_is_not_asked_again(tmp_path: Path) -> None:
    languages = registry(tmp_path)
    languages.check(lambda name, argv: Trial(0, "", f"{name} 2.0\n"))

    await languages.probe_versions()

    assert languages.versions["python"] == "python 2.0"  # stderr, when stdout says nothing


def test_a_trial_says_why_in_one_line() -> None:
    assert Trial(0, "v1\n", "").problem() is None
    assert Trial(2, "usage\n", "\n  bad option\nmore\n").problem() == "bad option"
    assert Trial(3, "", "").problem() == "its version command exited with code 3"
    assert Trial(None, "", "").problem() == "its version command did not finish"
