"""The check every reader makes before trusting a ``results.json``: the shipped JSON Schema.

A ``results.json`` is written by whatever ran on the entry's machine: in GitHub Actions, the
pull request's own code could have written it. So no report reads one that this schema does not
accept: every status is one of the model's words, every number a number, and every path a path
inside the entry folder (relative, no ``..`` segment), so a crafted file cannot make a report
write or read outside its results folder, nor crash it half way.

The schema is the file shipped with the package (``results.schema.json``, next to this module),
generated from the model by :mod:`gpu_runner.results_schema`; this module reads only that file,
so :mod:`gpu_runner.results` can use it without the model being needed here.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

SCHEMA_FILE = "results.schema.json"


class ResultsError(ValueError):
    """A results.json that the schema refuses; the message names where and why."""


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
