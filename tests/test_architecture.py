"""The architecture's contracts (``[tool.importlinter]`` in pyproject.toml), run as CI runs them.

``lint-imports`` (import-linter) checks two contracts: the layers of the package (cli -> doctor ->
cloud -> plan -> config -> checks -> execute -> report | log -> github | cost -> ... -> results ->
base modules, every top-level module named) and that no sibling modules import each other in a
circle. Here a developer sees a broken layer in pytest too, and the tests below plant an upward
import, a circle and an unnamed module in a copy of the package to show that each breaks the
contract (a contract that cannot fail proves nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "gpu_runner"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the repository's contracts; with ``src``, on the package found there."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the package in a folder of its own (what ``src`` holds), to plant imports in."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "gpu_runner", ignore=shutil.ignore_patterns("__pycache__", "*.json", "*.html",
                                                                               "*.css", "*.js", "*.sh"))
    return src


def test_the_package_keeps_its_layers_and_has_no_import_circles() -> None:
    r = lint_imports()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 2 kept, 0 broken." in r.stdout


def test_the_copy_is_what_the_contracts_read(copy: Path) -> None:
    """The planted imports below are read from the copy, not from the installed package."""
    r = subprocess.run([sys.executable, "-c", "import gpu_runner; print(gpu_runner.__file__)"],
                       env={**os.environ, "PYTHONPATH": str(copy)}, text=True, capture_output=True, timeout=60)
    assert Path(r.stdout.strip()) == copy / "gpu_runner" / "__init__.py"
    assert lint_imports(copy).returncode == 0


def test_an_upward_import_breaks_the_layers(copy: Path) -> None:
    results = copy / "gpu_runner" / "results.py"
    results.write_text(results.read_text() + "\n\ndef _planted() -> None:\n    from .cli import main  # noqa: F401\n")
    r = lint_imports(copy)
    assert r.returncode == 1, r.stdout
    assert "gpu_runner.results is not allowed to import gpu_runner.cli" in r.stdout


def test_a_circle_between_siblings_breaks_the_acyclic_contract(copy: Path) -> None:
    """cost.prices asks cost.catalog; the catalog importing prices again is the circle there was."""
    catalog = copy / "gpu_runner" / "cost" / "catalog.py"
    catalog.write_text(catalog.read_text() + "\n\ndef _planted() -> None:\n    from .prices import money  # noqa: F401\n")
    r = lint_imports(copy)
    assert r.returncode == 1, r.stdout
    assert "No cycles are allowed in gpu_runner.cost." in r.stdout


def test_a_module_the_layers_do_not_name_breaks_the_contract(copy: Path) -> None:
    (copy / "gpu_runner" / "newroom.py").write_text('"""A module nobody placed."""\n')
    r = lint_imports(copy)
    assert r.returncode == 1, r.stdout
    assert "gpu_runner.newroom" in r.stdout and "not listed as layers" in r.stdout
