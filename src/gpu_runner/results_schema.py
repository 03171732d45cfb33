"""The JSON Schema of ``results.json``, and the check every reader makes before trusting one.

A ``results.json`` is written by whatever ran on the entry's machine: in GitHub Actions, the
pull request's own code could have written it. So no report reads one that this schema does not
accept: every status is one of the model's words, every number a number, and every path a path
inside the entry folder (relative, no ``..`` segment), so a crafted file cannot make a report
write or read outside its results folder, nor crash it half way.

The schema is generated from the dataclasses in :mod:`gpu_runner.results` and shipped with the
package (``results.schema.json``, next to this module). After changing the model::

    python -m gpu_runner.results_schema --write-schema      # writes src/gpu_runner/results.schema.json
    python -m gpu_runner.results_schema --check-schema      # exit 1 when it is stale
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from . import results

SCHEMA_FILE = "results.schema.json"
SCHEMA_PATH = Path(__file__).resolve().parent / SCHEMA_FILE
SCHEMA_ID = "https://github.com/gpu-runner/gpu-runner/blob/main/src/gpu_runner/results.schema.json"

RELATIVE_PATH_PATTERN = r"^(?!/)(?!(?:.*/)?\.\.(?:/|$))[^\x00]+$"
"""A path inside the entry folder: not absolute, no ``..`` segment, no NUL, not empty."""


class ResultsError(ValueError):
    """A results.json that the schema refuses; the message names where and why."""


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


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _fast() -> Any:
    """The schema compiled to Python (fastjsonschema): the check every results.json gets."""
    import fastjsonschema

    return fastjsonschema.compile(_shipped())


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    """The reference validator (jsonschema): slower, but it names every problem; only for the
    message once the fast check has refused a file."""
    import jsonschema

    return jsonschema.Draft202012Validator(_shipped())


def _where(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _deepest(error: Any) -> Any:
    """For "not valid under any of the given schemas" (an optional object), the error inside."""
    while error.context:  # the branch that got furthest, not "is not of type 'null'"
        error = min(error.context, key=lambda e: (-len(e.absolute_path), e.validator == "type"))
    return error


def validate(data: Any) -> None:
    """Raise :class:`ResultsError` naming the first few problems when the schema refuses ``data``."""
    import fastjsonschema

    try:
        _fast()(data)
        return
    except fastjsonschema.JsonSchemaValueException as e:
        first = e.message.removeprefix("data.").removeprefix("data ")
    errors = sorted((_deepest(e) for e in _validator().iter_errors(data)),
                    key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if not errors:  # the two validators disagree: trust the refusal, say what the fast one saw
        raise ResultsError(first)
    shown = []
    for e in errors[:3]:
        message = e.message if len(e.message) <= 200 else e.message[:197] + "..."
        shown.append(f"{_where(e.absolute_path)}: {message}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    raise ResultsError("; ".join(shown) + more)


def validate_part(name: str, data: Any) -> None:
    """Raise :class:`ResultsError` when ``data`` is not a valid ``name`` of the schema's ``$defs``
    (e.g. ``VmUse`` in a try record, which comes from an artifact too)."""
    import jsonschema

    shipped = _shipped()
    validator = jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": shipped["$defs"]})
    errors = sorted((_deepest(e) for e in validator.iter_errors(data)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        e = errors[0]
        raise ResultsError(f"{_where(e.absolute_path)}: {e.message[:200]}")


def schema() -> dict[str, Any]:
    """The shipped schema (a copy)."""
    return copy.deepcopy(_shipped())


def _main(argv: list[str] | None = None) -> int:
    from .schema_cli import main

    return main(argv, module="gpu_runner.results_schema", what="results.json", text=schema_text(), default=SCHEMA_PATH,
                shown=f"the package's {SCHEMA_FILE}")


if __name__ == "__main__":
    sys.exit(_main())
