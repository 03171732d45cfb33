"""Regenerate tests/fixtures/compute-schemas.json, cloudbilling-schemas.json and github-runners-openapi.json.

    python tests/standins/extract_fixtures.py REFERENCE_DIR

REFERENCE_DIR holds the published documents (compute.v1.discovery.json and cloudbilling.v1.discovery.json
from the PyPI package google-api-python-client, github-openapi-subset.json from the npm package
@octokit/openapi).
Only the parts the stand-ins use are kept; descriptions are dropped to keep the files small.
The tests read the fixtures, never the reference folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
COMPUTE_ROOTS = ["Instance", "Operation", "InstanceList", "InstanceAggregatedList", "OperationList",
                 "SerialPortOutput", "Metadata"]
COMPUTE_METHODS = {"instances": ["insert", "get", "delete", "list", "aggregatedList", "getSerialPortOutput",
                                 "setMetadata"],
                   "zoneOperations": ["get", "wait", "list"]}
BILLING_ROOTS = ["ListSkusResponse"]
BILLING_METHOD = ("services", "skus", "list")
GITHUB_PATHS = {
    "/repos/{owner}/{repo}/actions/runners": ["get"],
    "/repos/{owner}/{repo}/actions/runners/{runner_id}": ["get", "delete"],
    "/repos/{owner}/{repo}/actions/runners/generate-jitconfig": ["post"],
    "/repos/{owner}/{repo}/actions/runners/registration-token": ["post"],
    "/repos/{owner}/{repo}/actions/runs/{run_id}": ["get"],
    "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs": ["get"],
    "/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts": ["get"],
    "/repos/{owner}/{repo}/actions/artifacts/{artifact_id}/{archive_format}": ["get"],
    "/repos/{owner}/{repo}/issues/{issue_number}/comments": ["get", "post"],
    "/repos/{owner}/{repo}/issues/comments/{comment_id}": ["get", "patch"],
    "/repos/{owner}/{repo}/commits/{commit_sha}/comments": ["get", "post"],
    "/repos/{owner}/{repo}/collaborators/{username}/permission": ["get"],
    "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}": ["delete"],
    "/repos/{owner}/{repo}/releases/latest": ["get"],
    "/repos/{owner}/{repo}/issues/{issue_number}/labels": ["get"],
    "/repos/{owner}/{repo}/pulls/{pull_number}/reviews": ["get"],
    "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs": ["get"],
    "/orgs/{org}/actions/runners": ["get"],
    "/orgs/{org}/actions/runners/{runner_id}": ["get", "delete"],
    "/orgs/{org}/actions/runners/generate-jitconfig": ["post"],
    "/orgs/{org}/actions/runner-groups": ["get"],
    "/orgs/{org}/actions/runner-groups/{runner_group_id}": ["get"],
}


def _strip(o):
    if isinstance(o, dict):
        return {k: _strip(v) for k, v in o.items() if k not in ("description", "enumDescriptions", "examples",
                                                                  "example", "summary", "externalDocs")}
    if isinstance(o, list):
        return [_strip(x) for x in o]
    return o


def _strip_docs(o):
    """Like _strip, but a property that is itself named "description" or "summary" (a schema, not
    text) is kept."""
    if isinstance(o, dict):
        return {k: _strip_docs(v) for k, v in o.items()
                if not (k in ("description", "enumDescriptions", "summary") and not isinstance(v, dict))}
    if isinstance(o, list):
        return [_strip_docs(x) for x in o]
    return o


def _refs(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(o, list):
        for x in o:
            yield from _refs(x)


def main(ref: Path) -> None:
    d = json.loads((ref / "compute.v1.discovery.json").read_text())
    schemas, todo = {}, list(COMPUTE_ROOTS)
    while todo:
        name = todo.pop()
        if name not in schemas:
            schemas[name] = _strip(d["schemas"][name])
            todo += list(_refs(d["schemas"][name]))
    methods = {r: {m: _strip(d["resources"][r]["methods"][m]) for m in ms} for r, ms in COMPUTE_METHODS.items()}
    out = {"_source": "compute.v1.discovery.json (revision %s): googleapiclient/discovery_cache/documents/"
                      "compute.v1.json in the PyPI package google-api-python-client 2.202.0, Apache-2.0; "
                      "schemas reachable from %s and the methods the stand-in serves, descriptions dropped"
                      % (d["revision"], ", ".join(COMPUTE_ROOTS)),
           "servicePath": d["servicePath"], "schemas": dict(sorted(schemas.items())), "methods": methods}
    (FIXTURES / "compute-schemas.json").write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")

    b = json.loads((ref / "cloudbilling.v1.discovery.json").read_text())
    schemas, todo = {}, list(BILLING_ROOTS)
    while todo:
        name = todo.pop()
        if name not in schemas:
            schemas[name] = _strip_docs(b["schemas"][name])
            todo += list(_refs(b["schemas"][name]))
    top, sub, method = BILLING_METHOD
    out = {"_source": "cloudbilling.v1.discovery.json (revision %s): googleapiclient/discovery_cache/documents/"
                      "cloudbilling.v1.json in the PyPI package google-api-python-client 2.202.0, Apache-2.0; "
                      "schemas reachable from %s and the method services.skus.list, descriptions dropped"
                      % (b["revision"], ", ".join(BILLING_ROOTS)),
           "rootUrl": b["rootUrl"], "parameters": _strip_docs(b["parameters"]),
           "schemas": dict(sorted(schemas.items())),
           "methods": {f"{top}.{sub}.{method}": _strip_docs(b["resources"][top]["resources"][sub]["methods"][method])}}
    (FIXTURES / "cloudbilling-schemas.json").write_text(json.dumps(out, indent=1) + "\n")

    g = json.loads((ref / "github-openapi-subset.json").read_text())
    paths = {p: {m: _strip(g["paths"][p][m]) for m in ms} for p, ms in GITHUB_PATHS.items()}
    out = {"_source": "github-openapi-subset.json: generated/api.github.com.deref.json in the npm package "
                      "@octokit/openapi 23.0.2, MIT (Octokit contributors); the runner, workflow-run, artifact, "
                      "comment, collaborator-permission, issue-label, latest-release, review, run-job, organisation-runner and runner-group paths the stand-in serves, descriptions and examples dropped",
           "openapi": g["openapi"], "paths": paths}
    (FIXTURES / "github-runners-openapi.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
