"""Strict JSON Schema validators from the published API descriptions in tests/fixtures/.

Compute Engine (discovery document): ``$ref: X`` becomes ``#/definitions/X``, int64/uint64
formats accept a decimal string or an integer, objects get ``additionalProperties: false``
(maps keep theirs), patterns are anchored, and properties annotated as required for a method
become required when validating that method's body. The Cloud Billing document is read the same
way, and its ``google-datetime`` strings must be RFC 3339 timestamps. GitHub (OpenAPI 3.0): ``nullable`` becomes
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
def billing_document() -> dict[str, Any]:
    return json.loads((FIXTURES / "cloudbilling-schemas.json").read_text())


@lru_cache(maxsize=None)
def github_document() -> dict[str, Any]:
    return json.loads((FIXTURES / "github-runners-openapi.json").read_text())


RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$"


def _discovery_to_jsonschema(node: Any, method: str | None, datetimes: bool = False) -> Any:
    if isinstance(node, list):
        return [_discovery_to_jsonschema(x, method, datetimes) for x in node]
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
            out["properties"] = {k: _discovery_to_jsonschema(v, method, datetimes) for k, v in value.items()}
            req = [k for k, v in value.items() if method and method in v.get("annotations", {}).get("required", [])]
            if req:
                out["required"] = req
        elif key in ("items", "additionalProperties"):
            out[key] = _discovery_to_jsonschema(value, method, datetimes)
        elif key == "pattern":
            out["pattern"] = f"^(?:{value})$"
        elif key == "type" and value == "any":
            continue
        else:
            out[key] = value
    if fmt in ("int64", "uint64"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "string", "pattern": r"^-?\d+$"}, {"type": "integer"}]
    if datetimes and fmt == "google-datetime":
        out["pattern"] = RFC3339
    if datetimes and fmt == "int32":
        out.update(minimum=-(2**31), maximum=2**31 - 1)
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


@lru_cache(maxsize=None)
def billing_validator(schema_name: str) -> jsonschema.Draft7Validator:
    """A strict validator for the Cloud Billing API's ``schema_name`` (e.g. ``ListSkusResponse``)."""
    doc = billing_document()
    defs = {k: _discovery_to_jsonschema(v, None, datetimes=True) for k, v in doc["schemas"].items()}
    return jsonschema.Draft7Validator({"$ref": f"#/definitions/{schema_name}", "definitions": defs})


def billing_query_problems(method: str, path_params: dict[str, str], query: dict[str, str]) -> list[str]:
    """What the published description of ``method`` (e.g. ``services.skus.list``) rejects in a
    request: a path parameter that breaks its pattern, an unknown query parameter, a value of the
    wrong type."""
    import re

    doc = billing_document()
    params = {**doc["parameters"], **doc["methods"][method]["parameters"]}
    out = []
    for name, value in path_params.items():
        pattern = params[name].get("pattern")
        if pattern and not re.fullmatch(pattern.lstrip("^").rstrip("$"), value):
            out.append(f"{name}: {value!r} does not match {pattern}")
    for name, value in query.items():
        spec = params.get(name)
        if spec is None or spec.get("location") != "query":
            out.append(f"unknown query parameter {name!r}")
            continue
        if spec.get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
            out.append(f"{name}: {value!r} is not an integer")
        if spec.get("format") == "google-datetime" and not re.fullmatch(RFC3339, value):
            out.append(f"{name}: {value!r} is not an RFC 3339 timestamp")
        if "enum" in spec and value not in spec["enum"]:
            out.append(f"{name}: {value!r} is not one of {spec['enum']}")
    return out


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
