"""The OpenAPI document's account of API keys: the two ways to send one (the "Authorize" button
of ``/docs``) and the 401 on every operation that needs one.

Declared only when authentication is on, on every path but the open ones: the same rule as
``RequireApiKey``, so the document says what the server does.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import FastAPI

from interpreter.api.schemas import ErrorResponse

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
UNAUTHORIZED = {
    "description": "Missing or invalid API key",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def document_api_keys(app: FastAPI, open_paths: Collection[str]) -> None:
    """Make ``app``'s OpenAPI document declare the API-key schemes and the 401 they imply."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # FastAPI's document, which it keeps in app.openapi_schema
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        components.setdefault("schemas", {}).setdefault(
            "ErrorResponse", ErrorResponse.model_json_schema()
        )
        for path, operations in schema.get("paths", {}).items():
            if path in open_paths:
                continue
            for method, operation in operations.items():
                if method in HTTP_METHODS:
                    operation["security"] = EITHER_SCHEME
                    operation.setdefault("responses", {}).setdefault("401", UNAUTHORIZED)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
