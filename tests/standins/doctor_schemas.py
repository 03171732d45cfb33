"""Strict validators for the routes ``gpu-runner doctor`` reads (fixtures written by
extract_doctor_fixtures.py), made the same way as those in :mod:`standins.schemas`."""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from typing import Any

import jsonschema

from .schemas import FIXTURES, _discovery_to_jsonschema, _openapi_to_jsonschema


@lru_cache(maxsize=None)
def _document(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@lru_cache(maxsize=None)
def doctor_compute_validator(schema_name: str) -> jsonschema.Draft7Validator:
    """Compute Engine's ``schema_name`` (MachineType, AcceleratorType, Image, Region, Project, RouterList)."""
    defs = {k: _discovery_to_jsonschema(v, None) for k, v in _document("doctor-compute-schemas.json")["schemas"].items()}
    return jsonschema.Draft7Validator({"$ref": f"#/definitions/{schema_name}", "definitions": defs})


@lru_cache(maxsize=None)
def resourcemanager_validator(schema_name: str) -> jsonschema.Draft7Validator:
    """Cloud Resource Manager v3's TestIamPermissionsRequest or TestIamPermissionsResponse."""
    defs = {k: _discovery_to_jsonschema(v, None) for k, v in
            _document("doctor-resourcemanager-schemas.json")["schemas"].items()}
    return jsonschema.Draft7Validator({"$ref": f"#/definitions/{schema_name}", "definitions": defs})


def resourcemanager_resource_ok(resource: str) -> bool:
    """The path parameter ``resource`` of projects.testIamPermissions matches its published pattern."""
    doc = _document("doctor-resourcemanager-schemas.json")
    pattern = doc["methods"]["projects.testIamPermissions"]["parameters"]["resource"]["pattern"]
    return re.fullmatch(pattern.lstrip("^").rstrip("$"), resource) is not None


@lru_cache(maxsize=None)
def doctor_github_validator(path: str, status: str = "200") -> jsonschema.Draft7Validator:
    """The published response ``status`` of ``GET path``."""
    op = _document("doctor-github-openapi.json")["paths"][path]["get"]
    schema = op["responses"][status]["content"]["application/json"]["schema"]
    return jsonschema.Draft7Validator(_openapi_to_jsonschema(copy.deepcopy(schema), False))


def compute_method_params(resource: str, method: str) -> set[str]:
    """The query parameters the published method takes."""
    params = _document("doctor-compute-schemas.json")["methods"][resource][method]["parameters"]
    return {k for k, v in params.items() if v.get("location") == "query"}
