"""A bounded property-based fuzz of the API against its own OpenAPI document.

The real application runs in process (a MemoryStore, authentication on, no sandbox) and its
schema comes from its own ``GET /openapi.json``. Every operation is called with generated
requests, fitting the schema and not, with a valid API key and without one; no answer may be a
server error, and each must be documented: its status code, its content type and its body. And
the other way round: every submission that fits the schema is accepted, so the document states
each reason the server would refuse one.

The fuzzed code really runs (no sandbox), so every language of this server is ``/bin/true``:
a submitted job executes nothing. Failures are collected rather than raised, so that one run
reports every kind of failure once, with an example, instead of shrinking the first.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from interpreter.api.app import create_app
from interpreter.config import Settings
from interpreter.errors import InvalidInputFile
from interpreter.inputs import normalize_path
from interpreter.store.memory import MemoryStore

# 200 cases of each of 18 operations: about 70 s alone, more beside the rest of the suite
pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(240)]

API_KEY = f"fuzz-key-{uuid.uuid4().hex}"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Cases in all, shared out over the operations (at least MIN_EXAMPLES each): with a key most
# reach the handlers; without one most stop at the 401. A budget, not a count per operation:
# 200 each took 143 s once the sessions' and Kernel Gateway's routes made 18 operations 32.
EXAMPLES = {"with_a_valid_key": 3600, "without_a_key": 1800}
MIN_EXAMPLES = 50
HARMLESS = {
    name: {"command": ["/bin/true"], "aliases": aliases, "extension": extension}
    for name, aliases, extension in (
        ("python", ["python3", "py"], ".py"),
        ("shell", ["bash", "sh"], ".sh"),
        ("javascript", ["js", "node"], ".js"),
    )
}


@dataclass
class Findings:
    """Failures by (operation, kind), each with a count and one example."""

    seen: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    cases: int = 0

    def add(self, operation: str, failure: AssertionError, status: int, request: str) -> None:
        kind = f"{getattr(failure, 'title', type(failure).__name__)} (HTTP {status})"
        example = f"{str(failure).strip()[:400]}\n    request: {request[:400]}"
        entry = self.seen.setdefault((operation, kind), [0, example])
        entry[0] += 1

    def report(self) -> str:
        lines = [f"{len(self.seen)} kinds of failure in {self.cases} cases:"]
        for (operation, kind), (count, example) in sorted(self.seen.items()):
            lines.append(f"- {operation}: {kind} x{count}\n    {example}")
        return "\n".join(lines)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """The application with authentication on and languages that run nothing."""
    for name in list(os.environ):  # none of the developer's settings may leak in
        if name.startswith("INTERPRETER_"):
            monkeypatch.delenv(name)
    settings = Settings(
        data_dir=tmp_path / "data",
        sandbox="none",
        enable_authentication=True,
        api_keys=[API_KEY],
        languages_json=json.dumps(HARMLESS),
        max_jobs=4,
        kill_grace_s=0.2,
        shutdown_grace_s=0.2,
        default_timeout_s=5.0,
        # packages would be resolved against the real registry: the document then says none
        # may be named, and a request that names some is refused (422)
        max_packages=0,
    )
    return create_app(settings, store=MemoryStore())


@pytest.fixture
def schema(app: FastAPI) -> Iterator[schemathesis.BaseSchema]:
    """The schema the running application serves (its lifespan ends with the test)."""
    yield schemathesis.openapi.from_asgi("/openapi.json", app)


def strategy(operation: Any) -> st.SearchStrategy[Any]:
    """Requests that fit the operation's schema, and requests that do not (where it has any
    input to get wrong)."""
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    try:
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    except Exception:  # an operation without input has no negative form
        pass
    return st.one_of(strategies)


def request(case: Any) -> str:
    """The request of ``case``, to reproduce a failure by hand."""
    try:
        return str(case.as_curl_command())
    except Exception as exc:  # a body no command line can carry
        return f"{case.method} {case.formatted_path} ({exc.__class__.__name__})"


def fuzz(operation: Any, headers: dict[str, str], examples: int, findings: Findings) -> None:
    settings = hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )

    @settings
    @given(case=strategy(operation))
    def call(case: Any) -> None:
        findings.cases += 1
        response = case.call(headers=headers)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                findings.add(operation.label, failure, response.status_code, request(case))
        except AssertionError as failure:
            findings.add(operation.label, failure, response.status_code, request(case))

    call()


HEADERS: dict[str, Callable[[], dict[str, str]]] = {
    "with_a_valid_key": lambda: {"X-API-Key": API_KEY},
    "without_a_key": dict,
}


@pytest.mark.parametrize("auth", list(EXAMPLES))
def test_fuzzed_requests_get_no_server_error_and_documented_answers(
    schema: schemathesis.BaseSchema, auth: str
) -> None:
    findings = Findings()
    started = time.monotonic()
    loaded = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in loaded), loaded  # the schema itself is sound
    operations = [result.ok() for result in loaded if isinstance(result, Ok)]
    assert len(operations) >= 10, [op.label for op in operations]
    each = max(MIN_EXAMPLES, EXAMPLES[auth] // len(operations))
    for operation in operations:
        fuzz(operation, HEADERS[auth](), each, findings)
    elapsed_s = time.monotonic() - started
    assert findings.cases >= len(operations) * 10, findings.cases
    assert not findings.seen, f"{findings.report()}\n({elapsed_s:.1f} s)"


def paths_a_schema_states(body: Any) -> bool:
    """Whether every input file's path in the JSON ``body`` passes the server's path rules."""
    files = body.get("input_files") if isinstance(body, dict) else None
    paths = [f.get("path") for f in files or () if isinstance(f, dict)]
    try:
        normalized = [normalize_path(p) for p in paths if isinstance(p, str)]
    except InvalidInputFile:
        return False
    return len(set(normalized)) == len(normalized)


def test_every_submission_that_fits_the_schema_is_accepted(schema: schemathesis.BaseSchema) -> None:
    """The document states what the server refuses (timeout maximum, languages, limits' bounds,
    environment names, working directory text): a body that fits it is never a 4xx."""
    [execute] = [
        result.ok()
        for result in schema.get_all_operations()
        if isinstance(result, Ok) and result.ok().label == "POST /execute"
    ]
    refused: dict[int, list[str]] = {}

    @hypothesis.settings(
        max_examples=200,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=execute.as_strategy(GenerationMode.POSITIVE))
    def call(case: Any) -> None:
        # An input file's path rules that JSON Schema cannot state ('..' or '.'-only parts, two
        # files at one path, 255-byte names) are in its description; such cases are skipped, as
        # are multipart bodies, whose file parts' names the generator makes up (the fuzz above
        # covers them).
        hypothesis.assume(case.media_type == "application/json")
        hypothesis.assume(paths_a_schema_states(case.body))
        # a key of its own per body: one key sent again with another body is rightly a 422
        key = {"Idempotency-Key": uuid.uuid4().hex}
        response = case.call(headers={**HEADERS["with_a_valid_key"](), **key})
        if response.status_code != 200:
            refused.setdefault(response.status_code, []).append(
                f"{response.text[:300]}\n    request: {request(case)}"
            )

    call()
    assert not refused, "\n".join(
        f"{code} x{len(seen)}: {seen[0]}" for code, seen in refused.items()
    )
