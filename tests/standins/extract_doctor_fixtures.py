"""Regenerate the fixtures of ``gpu-runner doctor``'s stand-in routes (kept apart from the other
fixtures, so that the two scripts never rewrite each other's files):

    python tests/standins/extract_doctor_fixtures.py REFERENCE_DIR DOCUMENTS_DIR

REFERENCE_DIR holds compute.v1.discovery.json (googleapiclient/discovery_cache/documents/compute.v1.json)
and github-openapi-subset.json (generated/api.github.com.deref.json in the npm package
@octokit/openapi 23.0.2); DOCUMENTS_DIR holds cloudresourcemanager.v3.json from the same
googleapiclient/discovery_cache/documents/ folder of the PyPI package google-api-python-client 2.202.0.
Writes tests/fixtures/doctor-compute-schemas.json, doctor-resourcemanager-schemas.json and
doctor-github-openapi.json; descriptions are dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from extract_fixtures import FIXTURES, _refs


def _strip(o):
    """Text (descriptions, summaries, examples) dropped; a property that is itself named
    "description" (a schema, not text) kept."""
    if isinstance(o, dict):
        return {k: _strip(v) for k, v in o.items()
                if not (k in ("description", "enumDescriptions", "summary") and not isinstance(v, dict))
                and k not in ("examples", "example", "externalDocs")}
    if isinstance(o, list):
        return [_strip(x) for x in o]
    return o

COMPUTE_ROOTS = ["MachineType", "AcceleratorType", "Image", "Region", "Project", "RouterList"]
COMPUTE_METHODS = {"machineTypes": ["get"], "acceleratorTypes": ["get"], "images": ["get", "getFromFamily"],
                   "regions": ["get"], "projects": ["get"], "routers": ["list"]}
CRM_ROOTS = ["TestIamPermissionsRequest", "TestIamPermissionsResponse"]
GITHUB_PATHS = {
    "/repos/{owner}/{repo}/actions/permissions/fork-pr-contributor-approval": ["get"],
    "/repos/{owner}/{repo}/actions/permissions/workflow": ["get"],
    "/repos/{owner}/{repo}/labels/{name}": ["get"],
    "/repos/{owner}/{repo}/releases/latest": ["get"],
}


def _closure(schemas: dict, roots: list[str]) -> dict:
    out, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if name not in out:
            out[name] = _strip(schemas[name])
            todo += list(_refs(schemas[name]))
    return dict(sorted(out.items()))


def main(ref: Path, documents: Path) -> None:
    d = json.loads((ref / "compute.v1.discovery.json").read_text())
    out = {"_source": "compute.v1.discovery.json (revision %s): googleapiclient/discovery_cache/documents/"
                      "compute.v1.json in the PyPI package google-api-python-client 2.202.0, Apache-2.0; schemas "
                      "reachable from %s and the read-only methods gpu-runner doctor calls, descriptions dropped"
                      % (d["revision"], ", ".join(COMPUTE_ROOTS)),
           "schemas": _closure(d["schemas"], COMPUTE_ROOTS),
           "methods": {r: {m: _strip(d["resources"][r]["methods"][m]) for m in ms} for r, ms in COMPUTE_METHODS.items()}}
    (FIXTURES / "doctor-compute-schemas.json").write_text(json.dumps(out, indent=1) + "\n")

    c = json.loads((documents / "cloudresourcemanager.v3.json").read_text())
    out = {"_source": "cloudresourcemanager.v3.json (revision %s): googleapiclient/discovery_cache/documents/"
                      "cloudresourcemanager.v3.json in the PyPI package google-api-python-client 2.202.0, Apache-2.0; "
                      "projects.testIamPermissions and its request and response, descriptions dropped" % c["revision"],
           "schemas": _closure(c["schemas"], CRM_ROOTS),
           "methods": {"projects.testIamPermissions": _strip(c["resources"]["projects"]["methods"]["testIamPermissions"])}}
    (FIXTURES / "doctor-resourcemanager-schemas.json").write_text(json.dumps(out, indent=1) + "\n")

    g = json.loads((ref / "github-openapi-subset.json").read_text())
    out = {"_source": "github-openapi-subset.json: generated/api.github.com.deref.json in the npm package "
                      "@octokit/openapi 23.0.2, MIT (Octokit contributors); the Actions permission, label and "
                      "latest-release paths gpu-runner doctor reads, descriptions and examples dropped",
           "openapi": g["openapi"], "paths": {p: {m: _strip(g["paths"][p][m]) for m in ms} for p, ms in GITHUB_PATHS.items()}}
    (FIXTURES / "doctor-github-openapi.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
