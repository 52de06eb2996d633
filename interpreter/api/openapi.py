"""The OpenAPI document, made to say what this server does: clients are generated from it.

FastAPI writes the document from the routes and models; ``document`` adds what only this
server's settings know, once, when ``/openapi.json`` is first asked for:

- the constraints the server enforces that the models cannot state statically: the timeout's
  maximum, the languages (names and aliases) available here, each limit's maximum;
- one error shape everywhere: ``ErrorResponse`` (``detail``, and ``errors`` on a 422) also
  for the 422 FastAPI declares by itself, with an example for every error status, and
  ``Retry-After`` on 429 and 503;
- with authentication on, the two ways to send a key (the "Authorize" button of ``/docs``)
  and the 401 on every operation that needs one. Declared only then, on every path but the open
  ones: the same rule as ``RequireApiKey``, so the document says what the server does.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection
from typing import Any

from fastapi import FastAPI

from interpreter.api.auth import MISSING_KEY
from interpreter.config import Settings
from interpreter.languages import LanguageRegistry
from interpreter.limits import LIMITS

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "ApiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key of this server (INTERPRETER_API_KEYS)",
    },
    "BearerKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "The same key, as Authorization: Bearer <key>",
    },
}
EITHER_SCHEME: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
ERROR_REF = "#/components/schemas/ErrorResponse"
FASTAPI_VALIDATION_REF = "#/components/schemas/HTTPValidationError"
UNAUTHORIZED = {
    "description": "Missing or invalid API key",
    "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
JOB_ID = "550e8400-e29b-41d4-a716-446655440000"
# One real answer of each error status, shown where an operation declares it.
ERROR_EXAMPLES: dict[str, dict[str, Any]] = {
    "400": {"detail": "There was an error parsing the body"},
    "401": {"detail": MISSING_KEY},
    "404": {"detail": f"Job not found: {JOB_ID}"},
    "409": {"detail": f"Job {JOB_ID} already finished with status 'completed'"},
    "413": {"detail": "request body is larger than the maximum of 2097152 bytes"},
    "422": {
        "detail": "Invalid body field 'timeout': Input should be a valid number",
        "errors": [
            {
                "loc": ["body", "timeout"],
                "msg": "Input should be a valid number",
                "type": "float_type",
            }
        ],
    },
    "429": {
        "detail": "too many pending jobs for this key (1000); wait for some to start, or "
        "cancel some"
    },
    "503": {"detail": "The job store is unavailable; retry later"},
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def document(
    app: FastAPI,
    settings: Settings,
    registry: LanguageRegistry,
    open_paths: Collection[str],
    authentication: bool,
) -> None:
    """Make ``app``'s OpenAPI document state this server's constraints, errors and keys."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # FastAPI's document, which it keeps in app.openapi_schema
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        state_constraints(schemas, settings, registry)
        if authentication:
            require_keys(schema, open_paths)
        document_errors(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def operations(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, operation)
        for path, methods in schema.get("paths", {}).items()
        for method, operation in methods.items()
        if method in HTTP_METHODS
    ]


def _typed(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of a property (``x | None`` is ``anyOf: [x, null]``)."""
    branches: list[dict[str, Any]] = prop.get("anyOf", [])
    return next((b for b in branches if b.get("type") not in (None, "null")), prop)


def state_constraints(
    schemas: dict[str, Any], settings: Settings, registry: LanguageRegistry
) -> None:
    """What this server refuses that the models do not say: a request valid by the document
    is not refused for a reason the document could have given."""
    request = schemas.get("ExecuteRequest", {}).get("properties", {})
    if "timeout" in request:
        _typed(request["timeout"]).update(exclusiveMinimum=0, maximum=settings.max_timeout_s)
    names = sorted(
        {
            name
            for lang in registry.languages.values()
            if lang.available
            for name in (lang.name, *lang.aliases)
        }
    )
    if "input_files" in request:
        request["input_files"]["maxItems"] = settings.max_input_files
    if "packages" in request:
        request["packages"]["maxItems"] = settings.max_packages
    environment = schemas.get("EnvironmentRequest", {}).get("properties", {})
    if "packages" in environment:  # at least one (with none allowed it answers 422 always)
        environment["packages"]["maxItems"] = max(1, settings.max_packages)
    if "language" in request and names:
        request["language"]["enum"] = names
    limits = schemas.get("LimitsRequest", {}).get("properties", {})
    for name, spec in LIMITS.items():
        if name in limits:
            _typed(limits[name])["maximum"] = getattr(settings, spec.maximum)


def require_keys(schema: dict[str, Any], open_paths: Collection[str]) -> None:
    """The API-key schemes, and the 401 of every operation outside ``open_paths``."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    for path, operation in operations(schema):
        if path not in open_paths:
            operation["security"] = copy.deepcopy(EITHER_SCHEME)
            operation.setdefault("responses", {}).setdefault("401", copy.deepcopy(UNAUTHORIZED))


def document_errors(schema: dict[str, Any]) -> None:
    """Every error answer as ``ErrorResponse`` with an example (FastAPI's own 422 included),
    413 wherever a body is read, and Retry-After where one is sent."""
    for _, operation in operations(schema):
        responses = operation.setdefault("responses", {})
        if "requestBody" in operation:
            responses.setdefault(
                "413", {"description": "Request body larger than the configured maximum"}
            )
        for status, response in responses.items():
            if status not in ERROR_EXAMPLES:
                continue
            content = response.setdefault("content", {}).setdefault("application/json", {})
            ref = content.get("schema", {}).get("$ref")
            if ref not in (None, ERROR_REF, FASTAPI_VALIDATION_REF):
                continue  # an answer of its own shape (the health report's 503)
            content["schema"] = {"$ref": ERROR_REF}
            content.setdefault("example", copy.deepcopy(ERROR_EXAMPLES[status]))
            if status == "422" and ref == FASTAPI_VALIDATION_REF:
                response["description"] = "Invalid request (each reason in errors)"
            if status in ("429", "503"):
                response.setdefault("headers", {}).update(copy.deepcopy(RETRY_AFTER))
    schemas = schema.get("components", {}).get("schemas", {})
    text = json.dumps(schema.get("paths", {}))
    if FASTAPI_VALIDATION_REF not in text:
        schemas.pop("HTTPValidationError", None)
        if "#/components/schemas/ValidationError" not in json.dumps(schemas):
            schemas.pop("ValidationError", None)
