"""docker-compose.yml and deploy/kubernetes/*.yaml, checked without Docker, kubectl or a network.

Hand-written structural checks of what matters to the scale-out (PostgreSQL, API-only replicas,
sandboxed workers): every document parses and has its kind's required fields; Deployments select
their own pods; every container has an image and resource requests and limits; the API has three
replicas probed on /health; every secretKeyRef names a key the Secret defines; the Service selects
the API pods; every ``INTERPRETER_*`` name in these files is one ``interpreter.config.Settings``
reads and every environment is one ``Settings`` accepts; every ``python -m`` module exists. Only
the processes that run jobs get privileges (docs/containers.md): workers are privileged, root, in
a cgroup namespace of their own, each drawing job uids no other worker on its machine uses; API
replicas are neither privileged nor root.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, AliasPath, ValidationError

from interpreter.config import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
KUBERNETES = REPO / "deploy" / "kubernetes"
DOCKERFILE = REPO / "Dockerfile"
ENV_NAME = re.compile(r"\bINTERPRETER_[A-Z][A-Z0-9_]*\b")  # as in test_dockerfile.py

API_SERVICES = ("api-a", "api-b")
API_USER = 10001  # the image's `interpreter` user
WORKER_SERVICES = ("worker-1", "worker-2")
SERVER_COMMAND = ["python", "-m", "interpreter.server"]
WORKER_COMMAND = ["python", "-m", "interpreter.worker"]
CHECK_COMMAND = [*WORKER_COMMAND, "--check"]

# The kinds these manifests may hold, and the apiVersion each must use.
API_VERSIONS = {
    "Namespace": "v1",
    "Secret": "v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "Deployment": "apps/v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}


# -- loading ---------------------------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of ``path``, each a mapping."""
    with path.open() as stream:
        documents = [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    for doc in documents:
        assert isinstance(doc, dict), f"{path.name}: a document is a {type(doc).__name__}"
    return documents


COMPOSE_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}`` and ``$$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        present = variables.get(name)
        if operator == ":-":
            return present if present else argument
        if operator == "-":
            return argument if present is None else present
        if operator in (":?", "?"):
            if present is None or (operator == ":?" and not present):
                raise KeyError(f"{name} must be set: {argument}")
            return present
        return present or ""

    return COMPOSE_VARIABLE.sub(replace, value)


def compose_environment(service: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, str]:
    """A service's ``environment`` (mapping or ``NAME=value`` list), interpolated."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {
        str(name): interpolate("" if value is None else str(value), variables)
        for name, value in environment.items()
    }


def command_words(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return command.split() if isinstance(command, str) else [str(word) for word in command]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE.is_file(), f"no {COMPOSE.name} at the repository root"
    documents = load_documents(COMPOSE)
    assert len(documents) == 1, f"{COMPOSE.name} holds {len(documents)} documents"
    return documents[0]


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose.get("services")
    assert isinstance(services, dict) and services, "docker-compose.yml has no services"
    return services


@pytest.fixture(scope="module")
def environments(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Each service's environment with compose's defaults (an empty shell environment)."""
    return {name: compose_environment(service, {}) for name, service in services.items()}


def manifest_files() -> list[Path]:
    return sorted(KUBERNETES.glob("*.yaml")) + sorted(KUBERNETES.glob("*.yml"))


@pytest.fixture(scope="module")
def manifests() -> list[tuple[Path, dict[str, Any]]]:
    files = manifest_files()
    assert files, f"no manifests in {KUBERNETES}"
    return [(path, doc) for path in files for doc in load_documents(path)]


def of_kind(manifests: list[tuple[Path, dict[str, Any]]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests if doc.get("kind") == kind}


@pytest.fixture(scope="module")
def deployments(manifests: list[tuple[Path, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return of_kind(manifests, "Deployment")


@pytest.fixture(scope="module")
def secrets(manifests: list[tuple[Path, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return of_kind(manifests, "Secret")


def containers(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def only_container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    found = deployment["spec"]["template"]["spec"]["containers"]
    assert len(found) == 1, f"{deployment['metadata']['name']} has {len(found)} containers"
    container: dict[str, Any] = found[0]
    return container


def env_of(container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's ``env`` by name (each entry as written: ``value`` or ``valueFrom``)."""
    entries = container.get("env", [])
    names = [entry["name"] for entry in entries]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    assert not duplicated, f"container {container['name']} sets {duplicated} more than once"
    return {entry["name"]: entry for entry in entries}


def literal_env(container: Mapping[str, Any]) -> dict[str, str]:
    return {name: e["value"] for name, e in env_of(container).items() if "value" in e}


def secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    """The keys a Secret defines (``data`` is base64, ``stringData`` plain: plain wins)."""
    data = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    data.update(secret.get("stringData", {}))
    return data


def resolved_env(container: Mapping[str, Any], secrets: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment with each secretKeyRef replaced by the Secret's value."""
    resolved: dict[str, str] = {}
    for name, entry in env_of(container).items():
        if "value" in entry:
            resolved[name] = str(entry["value"])
        elif ref := entry.get("valueFrom", {}).get("secretKeyRef"):
            resolved[name] = secret_data(secrets[ref["name"]])[ref["key"]]
    return resolved


# -- what the code reads --------------------------------------------------------------------------


def settings_env_names() -> set[str]:
    """The variables ``Settings`` reads: its field's alias, or env_prefix + the field's name."""
    config = Settings.model_config
    prefix = config.get("env_prefix", "")
    assert prefix == "INTERPRETER_", f"Settings' env_prefix is {prefix!r}"
    assert not config.get("case_sensitive", False), "names would have to match the field's case"
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias if field.validation_alias is not None else field.alias
        if alias is None:
            names.add(prefix + field_name.upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, AliasPath):
            names.add(str(alias.path[0]).upper())
    return names


def settings_accept(environment: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``Settings()`` from exactly these ``INTERPRETER_*`` variables; fail on what it refuses."""
    for name in [name for name in os.environ if name.startswith("INTERPRETER_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        if name.startswith("INTERPRETER_"):
            monkeypatch.setenv(name, value)
    try:
        Settings()
    except ValidationError as exc:
        pytest.fail(f"Settings refuses {dict(environment)}: {exc}")


def deploy_texts() -> Iterator[tuple[str, str]]:
    yield COMPOSE.name, COMPOSE.read_text()
    for path in manifest_files():
        yield f"deploy/kubernetes/{path.name}", path.read_text()
    if DOCKERFILE.is_file():
        yield DOCKERFILE.name, DOCKERFILE.read_text()


def python_modules(words: list[str]) -> list[str]:
    """The module of every ``python -m MODULE`` in a command line."""
    return [
        words[index + 2]
        for index, word in enumerate(words[:-2])
        if Path(word).name.startswith("python") and words[index + 1] == "-m"
    ]


# -- quantities ------------------------------------------------------------------------------------

QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
FACTORS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    match = QUANTITY.match(str(value))
    assert match, f"{value!r} is not a Kubernetes quantity"
    return float(match.group(1)) * FACTORS[match.group(2)]


def duration_s(value: str | int | float) -> float:
    """A compose duration (``30s``, ``1m30s``, ``500ms``) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    parts = re.findall(r"([0-9.]+)(ms|us|h|m|s)", value)
    assert parts and "".join(a + b for a, b in parts) == value, f"{value!r} is not a duration"
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    return sum(float(amount) * units[unit] for amount, unit in parts)


# -- helpers' own tests ----------------------------------------------------------------------------


def test_interpolate_follows_compose() -> None:
    variables = {"SET": "x", "EMPTY": ""}
    assert interpolate("a${SET:-d}b", variables) == "axb"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", variables) == "d  d"
    assert interpolate("$${SET} ${UNSET}", variables) == "${SET} "
    with pytest.raises(KeyError):
        interpolate("${UNSET:?needed}", variables)


def test_quantities_and_durations() -> None:
    assert quantity("250m") == 0.25 and quantity("2") == 2 and quantity("1Gi") == 2**30
    assert duration_s("1m30s") == 90 and duration_s("500ms") == 0.5
    assert python_modules(["/usr/bin/python3", "-m", "a.b", "--check"]) == ["a.b"]


def test_settings_names_include_prefixed_fields_and_aliases() -> None:
    names = settings_env_names()
    assert {"INTERPRETER_HOST", "INTERPRETER_DATABASE_URL", "INTERPRETER_AUTH"} <= names
    assert "INTERPRETER_DEFAULT_TIMEOUT" in names and "INTERPRETER_DEFAULT_TIMEOUT_S" not in names


# -- every file ------------------------------------------------------------------------------------


def test_every_interpreter_name_in_the_deploy_files_is_read_by_the_code() -> None:
    known = settings_env_names()
    unknown = {
        f"{where}: {name}"
        for where, text in deploy_texts()
        for name in ENV_NAME.findall(text)
        if name not in known
    }
    assert not unknown, (
        f"these INTERPRETER_* names are not read by interpreter.config.Settings: {sorted(unknown)}"
    )


def test_every_python_module_the_deploy_files_run_exists(
    services: dict[str, dict[str, Any]], deployments: dict[str, dict[str, Any]]
) -> None:
    commands: list[list[str]] = []
    for service in services.values():
        commands.append(command_words(service.get("command")))
        commands.append(command_words((service.get("healthcheck") or {}).get("test")))
    for deployment in deployments.values():
        for container in containers(deployment):
            commands.append(command_words(container.get("command")))
            commands.append(command_words(container.get("args")))
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                commands.append(
                    command_words(container.get(probe, {}).get("exec", {}).get("command"))
                )
    modules = {module for words in commands for module in python_modules(words)}
    assert {"interpreter.server", "interpreter.worker"} <= modules, sorted(modules)
    missing = []
    for module in sorted(modules):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(module + ".__main__")  # `python -m package`
        if spec is None:
            missing.append(module)
    assert not missing, f"`python -m` names modules that do not exist: {missing}"


# -- docker-compose.yml ----------------------------------------------------------------------------


def test_compose_has_the_scale_out_services(services: dict[str, dict[str, Any]]) -> None:
    expected = {"postgres", *API_SERVICES, *WORKER_SERVICES}
    assert expected <= set(services), f"services: {sorted(services)}"


def test_compose_postgres_is_16_with_a_healthcheck_and_a_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:16"), postgres["image"]
    test = " ".join(command_words(postgres["healthcheck"]["test"]))
    assert "pg_isready" in test, test
    named = [str(v).split(":")[0] for v in postgres.get("volumes", []) if ":" in str(v)]
    named = [name for name in named if not name.startswith((".", "/", "~"))]
    assert named, f"postgres has no named volume: {postgres.get('volumes')}"
    for name in named:
        assert name in (compose.get("volumes") or {}), f"volume {name} is not declared"


@pytest.mark.parametrize("name", [*API_SERVICES, *WORKER_SERVICES])
def test_compose_interpreter_services_share_postgres_and_keys(
    name: str, services: dict[str, dict[str, Any]], environments: dict[str, dict[str, str]]
) -> None:
    service, env = services[name], environments[name]
    assert service.get("build") or service.get("image"), f"{name} has neither build nor image"
    postgres_env = environments["postgres"]
    url = env.get("INTERPRETER_DATABASE_URL", "")
    expected = (
        f"postgresql://{postgres_env['POSTGRES_USER']}:{postgres_env['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres_env['POSTGRES_DB']}"
    )
    assert url == expected, f"{name}: INTERPRETER_DATABASE_URL={url!r}, postgres serves {expected}"
    assert env.get("INTERPRETER_AUTH") == "true", f"{name}: authentication is off"
    assert env.get("INTERPRETER_API_KEYS"), f"{name}: no INTERPRETER_API_KEYS"
    condition = (service.get("depends_on") or {}).get("postgres", {}).get("condition")
    assert condition == "service_healthy", f"{name} does not wait for a healthy postgres"


def test_compose_replicas_accept_the_same_keys(environments: dict[str, dict[str, str]]) -> None:
    keys = {environments[name]["INTERPRETER_API_KEYS"] for name in API_SERVICES}
    assert len(keys) == 1, "the API replicas accept different keys: a job is not readable on both"


@pytest.mark.parametrize("name", API_SERVICES)
def test_compose_api_replicas_run_no_jobs(
    name: str, services: dict[str, dict[str, Any]], environments: dict[str, dict[str, str]]
) -> None:
    service, env = services[name], environments[name]
    assert command_words(service.get("command")) == SERVER_COMMAND
    assert env.get("INTERPRETER_INPROCESS_WORKER") == "false"
    assert env.get("INTERPRETER_HOST") == "0.0.0.0"
    container_port = env.get("INTERPRETER_PORT", "8000")
    published = [str(port) for port in service.get("ports", [])]
    assert any(port.endswith(f":{container_port}") for port in published), published


def test_compose_api_replicas_publish_8001_and_8002(services: dict[str, dict[str, Any]]) -> None:
    published = [str(port) for name in API_SERVICES for port in services[name].get("ports", [])]
    assert published == ["8001:8000", "8002:8000"], published


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_compose_workers_run_sandboxed_jobs(
    name: str, services: dict[str, dict[str, Any]], environments: dict[str, dict[str, str]]
) -> None:
    service, env = services[name], environments[name]
    assert command_words(service.get("command")) == WORKER_COMMAND
    assert int(env["INTERPRETER_WORKER_CONCURRENCY"]) >= 1
    assert env.get("INTERPRETER_SANDBOX") == "bwrap"
    assert env.get("INTERPRETER_INPROCESS_WORKER", "true") != "false"  # not read by a worker
    # The sandbox's mounts, namespaces and per-job cgroups: privileged, root, its own cgroup
    # namespace (`docker run --privileged --cgroupns=private`, docs/containers.md).
    assert service.get("privileged") is True, f"{name} is not privileged"
    assert service.get("cgroup") == "private", f"{name}: cgroup {service.get('cgroup')!r}"
    assert str(service.get("user", "")).split(":")[0] in ("0", "root"), "cgroups need root"
    assert not service.get("ports"), f"{name} publishes ports but serves no HTTP"
    # The image's HEALTHCHECK probes HTTP /health, which a worker does not serve.
    assert command_words(service["healthcheck"]["test"])[1:] == CHECK_COMMAND


def uid_range(text: str) -> range:
    first, _, last = text.partition("-")
    return range(int(first), int(last) + 1)


def test_compose_workers_draw_job_uids_from_ranges_of_their_own(
    environments: dict[str, dict[str, str]],
) -> None:
    """Each worker locks the uids its jobs run as in its own /run: containers on one machine
    share none, so two workers with one range could run two jobs as the same host uid."""
    default = Settings.model_fields["sandbox_uids"].default
    ranges = {
        name: uid_range(environments[name].get("INTERPRETER_SANDBOX_UIDS", default))
        for name in WORKER_SERVICES
    }
    for name, uids in ranges.items():
        for other, other_uids in ranges.items():
            if name < other:
                overlap = uids.start < other_uids.stop and other_uids.start < uids.stop
                assert not overlap, f"{name} and {other} share job uids ({uids}, {other_uids})"


@pytest.mark.parametrize("name", API_SERVICES)
def test_compose_api_replicas_run_unprivileged_and_not_as_root(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    service = services[name]
    assert not service.get("privileged"), f"{name} runs no job: it needs no privileges"
    for key in ("cap_add", "devices", "security_opt", "cgroup", "device_cgroup_rules"):
        assert not service.get(key), f"{name} sets {key}: it runs no job"
    user = str(service.get("user", "")).split(":")[0]
    assert user == str(API_USER), f"{name} runs as {user or 'the image user, root'}"


def test_compose_points_at_the_container_guide() -> None:
    text = COMPOSE.read_text()
    assert "docs/containers.md" in text
    assert (REPO / "docs" / "containers.md").is_file()


@pytest.mark.parametrize("name", [*API_SERVICES, *WORKER_SERVICES])
def test_compose_stop_grace_outlasts_the_shutdown_grace(
    name: str, services: dict[str, dict[str, Any]], environments: dict[str, dict[str, str]]
) -> None:
    grace = float(environments[name].get("INTERPRETER_SHUTDOWN_GRACE_S", "10"))
    stop = duration_s(services[name].get("stop_grace_period", "10s"))
    assert stop > grace, f"{name}: stop_grace_period {stop:g} s <= shutdown grace {grace:g} s"


def test_compose_rate_limit_storage_is_a_service_of_its_own(
    services: dict[str, dict[str, Any]], environments: dict[str, dict[str, str]]
) -> None:
    storages = {environments[name].get("INTERPRETER_RATE_LIMIT_STORAGE") for name in API_SERVICES}
    assert len(storages) == 1, f"the API replicas count rate limits apart: {storages}"
    storage = storages.pop()
    if storage is None or storage.startswith("memory://"):
        pytest.skip("the rate limits are per replica (memory://)")
    host = storage.split("://", 1)[1].split(":")[0].split("/")[0]
    assert host in services, f"INTERPRETER_RATE_LIMIT_STORAGE={storage}: no service {host}"
    for name in API_SERVICES:
        assert host in (services[name].get("depends_on") or {}), f"{name} does not wait for {host}"


@pytest.mark.parametrize("name", [*API_SERVICES, *WORKER_SERVICES])
def test_compose_environments_are_valid_settings(
    name: str, environments: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_accept(environments[name], monkeypatch)


# -- Kubernetes ------------------------------------------------------------------------------------


def test_every_manifest_has_kind_api_version_and_name(
    manifests: list[tuple[Path, dict[str, Any]]],
) -> None:
    for path, doc in manifests:
        kind = doc.get("kind")
        assert kind in API_VERSIONS, f"{path.name}: unexpected kind {kind!r}"
        assert doc.get("apiVersion") == API_VERSIONS[kind], f"{path.name}: {doc.get('apiVersion')}"
        if kind != "Kustomization":
            name = doc.get("metadata", {}).get("name")
            assert name and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), (
                f"{path.name}: metadata.name {name!r}"
            )


def test_kustomization_lists_every_manifest(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    kustomizations = [doc for _, doc in manifests if doc["kind"] == "Kustomization"]
    assert len(kustomizations) == 1, "deploy/kubernetes needs one kustomization.yaml"
    listed = kustomizations[0].get("resources", [])
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    files = {path.name for path in manifest_files()} - {"kustomization.yaml"}
    assert set(listed) == files, f"kustomization lists {sorted(listed)}, the directory has {files}"


def test_the_expected_objects_exist(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    assert "interpreter-secrets" in of_kind(manifests, "Secret")
    assert {"interpreter-api", "interpreter-worker"} <= set(of_kind(manifests, "Deployment"))
    assert of_kind(manifests, "Service"), "no Service in front of the API"


def test_secret_values_are_placeholders(secrets: dict[str, dict[str, Any]]) -> None:
    data = secret_data(secrets["interpreter-secrets"])
    assert {"database-url", "api-keys"} <= set(data), sorted(data)
    for key, value in data.items():
        assert "REPLACE" in value.upper(), f"{key} looks like a real value, not a placeholder"
    assert data["database-url"].startswith("postgresql://")


@pytest.mark.parametrize("name", ["interpreter-api", "interpreter-worker"])
def test_deployment_selects_its_own_pods(name: str, deployments: dict[str, dict[str, Any]]) -> None:
    spec = deployments[name]["spec"]
    match = spec["selector"]["matchLabels"]
    labels = spec["template"]["metadata"]["labels"]
    assert match, f"{name}: empty selector"
    assert match.items() <= labels.items(), f"{name}: selector {match} vs pod labels {labels}"


def test_deployments_do_not_select_each_others_pods(
    deployments: dict[str, dict[str, Any]],
) -> None:
    for name, deployment in deployments.items():
        match = deployment["spec"]["selector"]["matchLabels"].items()
        for other, other_deployment in deployments.items():
            if other != name:
                labels = other_deployment["spec"]["template"]["metadata"]["labels"].items()
                assert not match <= labels, f"{name}'s selector also matches {other}'s pods"


@pytest.mark.parametrize("name", ["interpreter-api", "interpreter-worker"])
def test_containers_have_an_image_and_resources(
    name: str, deployments: dict[str, dict[str, Any]]
) -> None:
    for container in containers(deployments[name]):
        where = f"{name}/{container.get('name')}"
        assert container.get("name") and container.get("image"), f"{where}: name or image missing"
        resources = container.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        for resource in ("cpu", "memory"):
            assert resource in requests, f"{where}: no {resource} request"
            assert resource in limits, f"{where}: no {resource} limit"
            assert quantity(requests[resource]) <= quantity(limits[resource]), (
                f"{where}: {resource} request {requests[resource]} > limit {limits[resource]}"
            )


def test_every_secret_key_ref_names_a_defined_key(
    deployments: dict[str, dict[str, Any]], secrets: dict[str, dict[str, Any]]
) -> None:
    refs = [
        (name, entry["name"], entry["valueFrom"]["secretKeyRef"])
        for name, deployment in deployments.items()
        for container in containers(deployment)
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    ]
    assert refs, "no container takes anything from a Secret"
    for deployment, variable, ref in refs:
        assert ref["name"] in secrets, f"{deployment} {variable}: no Secret {ref['name']}"
        keys = secret_data(secrets[ref["name"]])
        assert ref["key"] in keys, f"{deployment} {variable}: {ref['name']} has no {ref['key']}"


def secret_ref(container: Mapping[str, Any], variable: str) -> dict[str, Any]:
    entry = env_of(container).get(variable)
    assert entry is not None, f"{container['name']} does not set {variable}"
    ref: dict[str, Any] | None = entry.get("valueFrom", {}).get("secretKeyRef")
    assert ref is not None, f"{variable} is not taken from a Secret"
    return ref


def test_api_deployment(deployments: dict[str, dict[str, Any]]) -> None:
    api = deployments["interpreter-api"]
    assert api["spec"]["replicas"] == 3
    container = only_container(api)
    assert command_words(container.get("command")) == SERVER_COMMAND
    env = literal_env(container)
    assert env.get("INTERPRETER_INPROCESS_WORKER") == "false"
    assert env.get("INTERPRETER_HOST") == "0.0.0.0"
    assert env.get("INTERPRETER_PORT") == "8000"
    assert env.get("INTERPRETER_AUTH") == "true"
    assert secret_ref(container, "INTERPRETER_DATABASE_URL")["key"] == "database-url"
    assert secret_ref(container, "INTERPRETER_API_KEYS")["key"] == "api-keys"
    ports = {port.get("name"): port["containerPort"] for port in container.get("ports", [])}
    assert 8000 in ports.values(), f"container ports {ports}"
    for probe_name in ("readinessProbe", "livenessProbe"):
        probe = container.get(probe_name, {}).get("httpGet")
        assert probe is not None, f"the API has no HTTP {probe_name}"
        assert probe["path"] == "/health", f"{probe_name} path {probe['path']}"
        assert ports.get(probe["port"], probe["port"]) == 8000, f"{probe_name} port {probe['port']}"


def test_api_service_routes_80_to_the_api_pods(
    manifests: list[tuple[Path, dict[str, Any]]], deployments: dict[str, dict[str, Any]]
) -> None:
    services = of_kind(manifests, "Service")
    api_labels = deployments["interpreter-api"]["spec"]["template"]["metadata"]["labels"]
    worker_labels = deployments["interpreter-worker"]["spec"]["template"]["metadata"]["labels"]
    fronting = {
        name: service
        for name, service in services.items()
        if service["spec"].get("selector", {}).items() <= api_labels.items()
    }
    assert fronting, f"no Service selects the API pods ({api_labels})"
    for name, service in fronting.items():
        selector = service["spec"]["selector"]
        assert selector, f"Service {name} has an empty selector: it selects nothing"
        assert not selector.items() <= worker_labels.items(), f"Service {name} selects workers"
        container_ports = {
            port.get("name"): port["containerPort"]
            for port in only_container(deployments["interpreter-api"]).get("ports", [])
        }
        routes = {
            port["port"]: container_ports.get(port.get("targetPort"), port.get("targetPort"))
            for port in service["spec"]["ports"]
        }
        assert routes.get(80) == 8000, f"Service {name} routes {routes}"


def test_worker_deployment(deployments: dict[str, dict[str, Any]]) -> None:
    worker = deployments["interpreter-worker"]
    assert worker["spec"]["replicas"] == 2
    container = only_container(worker)
    assert command_words(container.get("command")) == WORKER_COMMAND
    env = literal_env(container)
    assert int(env["INTERPRETER_WORKER_CONCURRENCY"]) >= 1
    assert env.get("INTERPRETER_SANDBOX") == "bwrap"
    assert secret_ref(container, "INTERPRETER_DATABASE_URL")["key"] == "database-url"
    security = container.get("securityContext", {})
    pod_security = worker["spec"]["template"]["spec"].get("securityContext", {})
    assert security.get("privileged") is True, "the sandbox's mounts and job cgroups need it"
    run_as = security.get("runAsUser", pod_security.get("runAsUser", 0))
    assert run_as == 0, "cgroups, mounts and the switch to each job's uid need root"
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True
    assert not container.get("ports"), "the worker serves no port"
    probe = container.get("livenessProbe", {})
    assert "httpGet" not in probe, "the worker serves no HTTP"
    assert command_words(probe.get("exec", {}).get("command")) == CHECK_COMMAND


def test_worker_pods_keep_the_nodes_user_namespace(deployments: dict[str, dict[str, Any]]) -> None:
    pod = deployments["interpreter-worker"]["spec"]["template"]["spec"]
    # In a user namespace of its own, the pod's CAP_SYS_ADMIN could not mount the jobs' ext4.
    assert pod.get("hostUsers", True) is True, "hostUsers: false: the ext4 mounts would fail"
    assert pod.get("automountServiceAccountToken") is False, "jobs must not get a token"


def test_worker_pods_run_one_per_node(deployments: dict[str, dict[str, Any]]) -> None:
    """Every replica has the same INTERPRETER_SANDBOX_UIDS and locks them in its own /run: two
    workers on one node could run two jobs as the same uid."""
    worker = deployments["interpreter-worker"]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    pod = worker["spec"]["template"]["spec"]
    terms = pod.get("affinity", {}).get("podAntiAffinity", {})
    required = terms.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    assert any(
        term.get("topologyKey") == "kubernetes.io/hostname"
        and term.get("labelSelector", {}).get("matchLabels", {}).items() <= labels.items()
        and term.get("labelSelector", {}).get("matchLabels")
        for term in required
    ), f"no required anti-affinity keeps worker pods on separate nodes: {terms}"


def test_api_pods_run_unprivileged_and_not_as_root(
    deployments: dict[str, dict[str, Any]],
) -> None:
    api = deployments["interpreter-api"]
    pod_security = api["spec"]["template"]["spec"].get("securityContext", {})
    container = only_container(api)
    security = {**pod_security, **container.get("securityContext", {})}
    assert security.get("runAsNonRoot") is True, "the image's default user is root"
    assert security.get("runAsUser") == API_USER, f"runAsUser {security.get('runAsUser')}"
    assert not security.get("privileged"), "the API runs no job: it needs no privileges"
    assert security.get("allowPrivilegeEscalation") is False
    assert security.get("capabilities", {}).get("drop") == ["ALL"]
    assert not security.get("capabilities", {}).get("add"), "the API needs no capability"


def test_namespace_admits_the_privileged_workers(
    manifests: list[tuple[Path, dict[str, Any]]],
) -> None:
    namespaces = of_kind(manifests, "Namespace")
    assert list(namespaces) == ["interpreter"], sorted(namespaces)
    labels = namespaces["interpreter"]["metadata"].get("labels", {})
    enforce = labels.get("pod-security.kubernetes.io/enforce", "privileged")
    assert enforce == "privileged", f"Pod Security {enforce!r} would turn the workers away"


@pytest.mark.parametrize("name", ["interpreter-api", "interpreter-worker"])
def test_termination_grace_outlasts_the_shutdown_grace(
    name: str, deployments: dict[str, dict[str, Any]]
) -> None:
    pod = deployments[name]["spec"]["template"]["spec"]
    env = literal_env(only_container(deployments[name]))
    assert "INTERPRETER_SHUTDOWN_GRACE_S" in env, f"{name} leaves the shutdown grace implicit"
    grace = float(env["INTERPRETER_SHUTDOWN_GRACE_S"])
    termination = pod.get("terminationGracePeriodSeconds", 30)
    assert termination > grace, (
        f"{name}: terminationGracePeriodSeconds {termination} <= shutdown grace {grace:g}"
    )


@pytest.mark.parametrize("name", ["interpreter-api", "interpreter-worker"])
def test_deployment_environments_are_valid_settings(
    name: str,
    deployments: dict[str, dict[str, Any]],
    secrets: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings_accept(resolved_env(only_container(deployments[name]), secrets), monkeypatch)
