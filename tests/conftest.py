"""Shared helpers: build notebooks in a folder, run the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent
FIXTURE_NOTEBOOKS = HERE / "notebooks"
REPO = HERE.parent


def make_nb(folder: Path, name: str, *cells: Any, kernel: str = "python3", **metadata: Any) -> Path:
    """Write a notebook. A cell is code (str), ("md", text), or ("code", source, [tags])."""
    built = []
    for c in cells:
        if isinstance(c, str):
            built.append(new_code_cell(c))
        elif c[0] == "md":
            built.append(new_markdown_cell(c[1]))
        else:
            built.append(new_code_cell(c[1], metadata={"tags": list(c[2])} if len(c) > 2 else {}))
    nb = new_notebook(cells=built)
    nb.metadata["kernelspec"] = {"name": kernel, "language": "python", "display_name": kernel}
    nb.metadata.update(metadata)
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def gpu_runner(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would, in ``cwd``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gpu_runner", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def results(out: Path, entry: str = "local") -> dict[str, Any]:
    return json.loads((out / entry / "results.json").read_text(encoding="utf-8"))


def by_path(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["path"]: n for n in res["notebooks"]}


def saved(out: Path, nb_result: dict[str, Any], entry: str = "local") -> Any:
    return nbformat.read(out / entry / nb_result["files"]["ipynb"], as_version=4)


@pytest.fixture
def nbdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d
