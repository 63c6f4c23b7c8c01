"""The OpenAPI 3.1 document, generated from the declared operations and their models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contact_center.api.framework import API_PREFIX, INT32_MAX, Operation
from contact_center.api.models import ErrorResponse
from crm_core.services.api_tokens import SCOPES

REF = "#/components/schemas/{model}"
STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No content", 400: "Bad input", 401: "No valid token",
    403: "The token lacks the scope", 404: "Not found", 409: "Conflict with the record's state",
    413: "Body too large", 415: "Not JSON", 429: "Rate limit reached (see Retry-After)",
}


def build_openapi(operations: list[Operation], *, version: str = "1.0.0") -> dict[str, Any]:
    """The whole document: paths, schemas, the bearer security scheme with its scopes."""
    models: set[type[BaseModel]] = {ErrorResponse}
    for op in operations:
        models.update(m for m in (op.body, op.response) if m is not None)
    keyed = [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)]
    refs, defs = models_json_schema(keyed, ref_template=REF)
    schemas = defs.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        item = paths.setdefault(API_PREFIX + op.path, {})
        item[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Contact center API",
            "version": version,
            "description": "JSON over HTTPS. Authenticate with `Authorization: Bearer <token>`."
                           " Errors always look like `{\"error\": {\"code\", \"message\", "
                           "\"field\"}}`. Lists are paged with `cursor` and `limit`.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "Scopes: " + "; ".join(f"`{k}` {v}" for k, v in SCOPES.items()),
            }},
        },
        "security": [{"bearer": []}],
    }


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "x-scope": op.scope,
        "parameters": [
            {"name": name, "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": INT32_MAX}}
            for name in op.path_params
        ],
    }
    if op.description:
        spec["description"] = op.description + f"\n\nScope: `{op.scope}`."
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                     "schema": prop}
            if prop.get("type") == "array":
                param["style"] = "form"
                param["explode"] = True
            spec["parameters"].append(param)
    if op.body is not None:
        spec["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": refs[(op.body, "validation")]}}}
    responses: dict[str, Any] = {}
    if op.status == 204 or op.response is None:
        responses[str(op.status if op.status != 200 else 204)] = {
            "description": STATUS_TEXT.get(op.status, "No content")}
    else:
        responses[str(op.status)] = {
            "description": STATUS_TEXT.get(op.status, "OK"),
            "content": {"application/json": {"schema": refs[(op.response, "validation")]}}}
    error_ref = refs[(ErrorResponse, "validation")]
    statuses = {400, 401, 403, 429, *op.errors}
    if op.path_params:
        statuses.add(404)
    if op.body is not None:
        statuses.update({413, 415})
    for status in sorted(statuses):
        responses[str(status)] = {"description": STATUS_TEXT.get(status, "Error"),
                                  "content": {"application/json": {"schema": error_ref}}}
    spec["responses"] = responses
    return spec
