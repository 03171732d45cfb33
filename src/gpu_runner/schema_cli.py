"""The small command line that prints, writes or checks one of the package's JSON Schemas
(``python -m gpu_runner.config`` for the matrix, ``python -m gpu_runner.results_schema`` for
results.json): the schema file is generated from the models and kept in git, and the tests
fail when it is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None, *, module: str, what: str, text: str, default: Path, shown: str) -> int:
    """``module``: the ``python -m`` name; ``what``: which schema; ``text``: the schema as it must
    be; ``default``: its file; ``shown``: how help names that file."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}",
                                     description=f"Print, write or check the {what} JSON Schema.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write-schema", action="store_true", help=f"write {shown}")
    group.add_argument("--check-schema", action="store_true", help=f"exit 1 when {shown} is stale")
    parser.add_argument("--path", type=Path, default=default, help=f"schema file (default: {shown})")
    args = parser.parse_args(argv)
    if args.write_schema:
        args.path.parent.mkdir(parents=True, exist_ok=True)
        args.path.write_text(text, encoding="utf-8")
        print(f"wrote {args.path}")
        return 0
    if args.check_schema:
        current = args.path.read_text(encoding="utf-8") if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is stale; run: python -m {module} --write-schema", file=sys.stderr)
            return 1
        print(f"{args.path} is up to date")
        return 0
    sys.stdout.write(text)
    return 0
