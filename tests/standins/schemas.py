"""Strict JSON Schema validators from the published API descriptions in tests/fixtures/.

Compute Engine (discovery document): ``$ref: X`` becomes ``#/definitions/X``, int64/uint64
formats accept a decimal string or an integer, objects get ``additionalProperties: false``
(maps keep theirs), patterns are anchored, and properties annotated as required for a method
become required when validating that method's body. GitHub (OpenAPI 3.0): ``nullable`` becomes
a ``null`` type, objects with properties get ``additionalProperties: false`` in request bodies.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@lru_cache(maxsize=None)
def compute_document() -> dict[str, Any]:
    return json.loads((FIXTURES / "compute-schemas.json").read_text())


@lru_cache(maxsize=None)
def github_document() -> dict[str, Any]:
    return json.loads((FIXTURES / "github-runners-openapi.json").read_text())


def _discovery_to_jsonschema(node: Any, method: str | None) -> Any:
    if isinstance(node, list):
        return [_discovery_to_jsonschema(x, method) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return {"$ref": f"#/definitions/{node['$ref']}"}
    out: dict[str, Any] = {}
    fmt = node.get("format")
    for key, value in node.items():
        if key in ("id", "annotations", "format", "location", "default"):
            continue
        if key == "properties":
            out["properties"] = {k: _discovery_to_jsonschema(v, method) for k, v in value.items()}
            req = [k for k, v in value.items() if method and method in v.get("annotations", {}).get("required", [])]
            if req:
                out["required"] = req
        elif key in ("items", "additionalProperties"):
            out[key] = _discovery_to_jsonschema(value, method)
        elif key == "pattern":
            out["pattern"] = f"^(?:{value})$"
        elif key == "type" and value == "any":
            continue
        else:
            out[key] = value
    if fmt in ("int64", "uint64"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "string", "pattern": r"^-?\d+$"}, {"type": "integer"}]
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=None)
def compute_validator(schema_name: str, method: str | None = None) -> jsonschema.Draft7Validator:
    """A strict validator for Compute Engine's ``schema_name`` (required fields of ``method``)."""
    doc = compute_document()
    defs = {k: _discovery_to_jsonschema(v, method) for k, v in doc["schemas"].items()}
    schema = {"$ref": f"#/definitions/{schema_name}", "definitions": defs}
    return jsonschema.Draft7Validator(schema)


def _openapi_to_jsonschema(node: Any, strict: bool) -> Any:
    if isinstance(node, list):
        return [_openapi_to_jsonschema(x, strict) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_jsonschema(v, strict) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        elif "enum" in out:
            out["enum"] = [*out["enum"], None]
    if strict and node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=None)
def github_validator(path: str, method: str, where: str = "request") -> jsonschema.Draft7Validator:
    """Validator for the request body (``where='request'``) or a response (``where='201'``...)."""
    op = github_document()["paths"][path][method]
    if where == "request":
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        return jsonschema.Draft7Validator(_openapi_to_jsonschema(copy.deepcopy(schema), True))
    schema = op["responses"][where]["content"]["application/json"]["schema"]
    return jsonschema.Draft7Validator(_openapi_to_jsonschema(copy.deepcopy(schema), False))


def problems(validator: jsonschema.Draft7Validator, body: Any) -> list[str]:
    """Human-readable validation errors (empty when ``body`` is valid)."""
    out = []
    for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in e.absolute_path) or "(body)"
        out.append(f"{where}: {e.message[:300]}")
    return out
