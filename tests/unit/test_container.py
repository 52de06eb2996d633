"""interpreter.sandbox.container: telling a container from a bare machine, and the hint a
refusal to start appends there (checked against the files that document the same flags)."""

from __future__ import annotations

from pathlib import Path

import pytest

from interpreter.sandbox.container import (
    DOCKER_FLAGS,
    GUIDE,
    KUBERNETES_SETTING,
    container_hint,
    in_container,
)

REPO = Path(__file__).resolve().parents[2]
NO_VARIABLES: dict[str, str] = {}


def bare_machine(root: Path) -> Path:
    """A root filesystem as a bare host has it: pid 1 in the root cgroups, no runtime's file."""
    init = root / "proc" / "1"
    init.mkdir(parents=True)
    (init / "cgroup").write_text("12:memory:/init.scope\n0::/init.scope\n")
    (init / "environ").write_bytes(b"HOME=/\0TERM=linux\0")
    (root / "run").mkdir()
    return root


def test_bare_machine_is_not_a_container(tmp_path: Path) -> None:
    assert in_container(bare_machine(tmp_path), NO_VARIABLES) is False


def test_nothing_readable_is_not_a_container(tmp_path: Path) -> None:
    assert in_container(tmp_path, NO_VARIABLES) is False


@pytest.mark.parametrize("marker", [".dockerenv", "run/.containerenv"])
def test_a_runtimes_marker_file_means_a_container(tmp_path: Path, marker: str) -> None:
    root = bare_machine(tmp_path)
    (root / marker).touch()
    assert in_container(root, NO_VARIABLES) is True


@pytest.mark.parametrize(
    "variables",
    [{"container": "podman"}, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}],
)
def test_a_runtimes_variable_means_a_container(tmp_path: Path, variables: dict[str, str]) -> None:
    assert in_container(bare_machine(tmp_path), variables) is True


def test_empty_variables_do_not_mean_a_container(tmp_path: Path) -> None:
    variables = {"container": "", "KUBERNETES_SERVICE_HOST": ""}
    assert in_container(bare_machine(tmp_path), variables) is False


@pytest.mark.parametrize(
    "line",
    [
        "4:memory:/docker/0123456789abcdef",
        "0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-0123.scope",
        "0::/machine.slice/libpod-0123.scope",
        "5:pids:/lxc.payload.c1",
    ],
)
def test_init_in_a_runtimes_cgroup_means_a_container(tmp_path: Path, line: str) -> None:
    root = bare_machine(tmp_path)
    (root / "proc" / "1" / "cgroup").write_text(line + "\n")
    assert in_container(root, NO_VARIABLES) is True


def test_init_started_with_container_variable_means_a_container(tmp_path: Path) -> None:
    root = bare_machine(tmp_path)
    (root / "proc" / "1" / "environ").write_bytes(b"HOME=/\0container=systemd-nspawn\0")
    assert in_container(root, NO_VARIABLES) is True


def test_in_container_reads_this_machine_without_failing() -> None:
    assert isinstance(in_container(), bool)


def test_hint_names_what_is_missing_the_flags_the_guide_and_the_way_out() -> None:
    hint = container_hint("a writable /sys/fs/cgroup")
    assert hint.startswith("this container lacks a writable /sys/fs/cgroup: ")
    assert f"`docker run {DOCKER_FLAGS}`" in hint
    assert KUBERNETES_SETTING in hint
    assert GUIDE in hint
    assert hint.endswith("or set INTERPRETER_SANDBOX=none for trusted code only")
    assert "\n" not in hint and not hint.endswith(".")  # appended after "; " to one line


def test_hint_without_a_missing_piece_still_names_the_flags() -> None:
    hint = container_hint("  ")
    assert hint.startswith("in a container: run it with ")
    assert DOCKER_FLAGS in hint


def test_hint_flags_are_the_ones_the_guide_the_image_and_compose_use() -> None:
    assert DOCKER_FLAGS == "--privileged --cgroupns=private"
    guide = (REPO / GUIDE).read_text()
    assert f"docker run {DOCKER_FLAGS}" in guide
    assert KUBERNETES_SETTING.split(",")[0] in guide
    header = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert f"docker run {DOCKER_FLAGS}" in "\n".join(header), "the Dockerfile's header comment"
    compose = (REPO / "docker-compose.yml").read_text()
    assert "privileged: true" in compose and "cgroup: private" in compose
