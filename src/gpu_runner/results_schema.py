"""The JSON Schema of ``results.json``, generated from the model.

The schema is generated from the dataclasses in :mod:`gpu_runner.results` and shipped with the
package (``results.schema.json``, next to this module); every reader checks a ``results.json``
against the shipped file (:mod:`gpu_runner.results_validation`, which needs no model, so the
imports go one way: this module -> results -> results_validation). After changing the model::

    python -m gpu_runner.results_schema --write-schema      # writes src/gpu_runner/results.schema.json
    python -m gpu_runner.results_schema --check-schema      # exit 1 when it is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import results
from .results_validation import SCHEMA_FILE

SCHEMA_PATH = Path(__file__).resolve().parent / SCHEMA_FILE
SCHEMA_ID = "https://github.com/gpu-runner/gpu-runner/blob/main/src/gpu_runner/results.schema.json"

RELATIVE_PATH_PATTERN = r"^(?!/)(?!(?:.*/)?\.\.(?:/|$))[^\x00]+$"
"""A path inside the entry folder: not absolute, no ``..`` segment, no NUL, not empty."""


def _relative_path() -> dict[str, Any]:
    return {"type": "string", "pattern": RELATIVE_PATH_PATTERN,
            "description": "Relative to the entry folder, with '/'; never absolute, never a '..' segment."}


def json_schema() -> dict[str, Any]:
    """The schema (draft 2020-12), generated from :class:`gpu_runner.results.EntryResult`."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(results.EntryResult).json_schema(mode="validation")
    defs = schema.setdefault("$defs", {})
    defs["RelativePath"] = _relative_path()
    ref = {"$ref": "#/$defs/RelativePath"}
    for node in [schema, *defs.values()]:
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
    props = schema["properties"]
    props["schema_version"] = {"const": results.SCHEMA_VERSION, "title": "Schema Version"}
    if "schema_version" not in schema.setdefault("required", []):
        schema["required"].append("schema_version")
    counts = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    props["totals"] = {"type": "object", "title": "Totals", "additionalProperties": False,
                       "properties": {"notebooks": counts, "checks": counts},
                       "description": "Notebooks and checks counted apart, by status (derived; readers recount)."}
    props["cell_numbering"] = {"type": "string", "title": "Cell Numbering",
                               "description": "How cells are numbered (derived: results.CELL_NUMBERING)."}
    defs["Failure"]["properties"]["cell_number"] = {
        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "title": "Cell Number",
        "description": "cell_index + 1: how reports name the cell (derived)."}
    defs["CellResult"]["properties"]["number"] = {"type": "integer", "minimum": 1, "title": "Number",
                                                  "description": "index + 1 (derived)."}
    nb = defs["NotebookResult"]["properties"]
    nb["dir"] = {**ref, "title": "Dir"}
    nb["files"] = {"type": "object", "title": "Files", "additionalProperties": {"anyOf": [
        ref, {"type": "array", "items": ref}, {"type": "null"}]}}
    defs["CheckResult"]["properties"]["artifacts"] = {"type": "array", "items": ref, "title": "Artifacts"}
    failure = defs["Failure"]["properties"]
    failure["kind"] = {"enum": list(results.FAILURE_KINDS), "type": "string", "title": "Kind"}
    vm = defs["VmUse"]["properties"]  # times and money are never negative
    for name in ("lifetime_s", "running_s", "usd_per_hour", "usd"):
        vm[name]["anyOf"] = [{"type": "number", "minimum": 0}, {"type": "null"}]
    vm["parts_usd_per_hour"]["additionalProperties"] = {"type": "number", "minimum": 0}
    vm["accelerator_count"]["minimum"] = 0
    cost = defs["Cost"]["properties"]
    cost["usd"]["anyOf"] = [{"type": "number", "minimum": 0}, {"type": "null"}]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            **{k: v for k, v in schema.items() if k != "title"},
            "title": "gpu-runner results.json"}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


def _main(argv: list[str] | None = None) -> int:
    from .schema_cli import main

    return main(argv, module="gpu_runner.results_schema", what="results.json", text=schema_text(), default=SCHEMA_PATH,
                shown=f"the package's {SCHEMA_FILE}")


if __name__ == "__main__":
    sys.exit(_main())
