"""Packaging extras: what each command needs beyond running notebooks here, and what it says
when that is missing (the action's run job on a GPU VM installs none of them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpu_runner.errors import EXTRAS


def _without(modules: list[str], code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python where ``modules`` cannot be imported, as without their extra."""
    block = "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run([sys.executable, "-c", f"import sys\n{block}{textwrap.dedent(code)}"], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, extra", [
    (["comment", "summary.md", "--pr", "3"], "github"),
    (["start", "--matrix", "m.yml", "--entry", "rt--l4"], "gce"),
    (["janitor", "--dry-run", "--project", "test-project"], "gce"),
])
def test_a_command_whose_extra_is_missing_says_how_to_install_it(tmp_path, args, extra):
    (tmp_path / "summary.md").write_text("## ok\n")
    (tmp_path / "m.yml").write_text(textwrap.dedent("""\
        version: 1
        gce: {project: test-project, region: us-central1}
        machines:
          l4: {machine_type: g2-standard-8, accelerator: {type: nvidia-l4, count: 1}, zones: [a]}
        runtimes:
          rt: {notebooks: [nb.ipynb]}
        """))
    (tmp_path / "nb.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    blocked = [m.split(".")[0] for m in EXTRAS[extra]]
    p = _without(blocked, f"from gpu_runner.cli import main\nmain({args!r})", tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"pip install 'gpu-runner[{extra}]'" in p.stderr and "Traceback" not in p.stderr


def test_without_the_pdf_extra_a_run_writes_everything_but_pdfs_and_says_so(tmp_path):
    nb = tmp_path / "nb.ipynb"
    nb.write_text('{"cells": [{"cell_type": "code", "execution_count": null, "id": "a", "metadata": {}, '
                  '"outputs": [], "source": ["print(1)"]}], "metadata": {"kernelspec": {"name": "python3", '
                  '"language": "python", "display_name": "Python 3"}}, "nbformat": 4, "nbformat_minor": 5}')
    p = _without(["playwright"], "from gpu_runner.cli import main\nmain(['run', 'nb.ipynb', '--no-checks'])", tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "pip install 'gpu-runner[pdf]'" in p.stdout + p.stderr
    nb_dir = tmp_path / "results" / "local" / "notebooks"
    assert list(nb_dir.rglob("output.html")) and not list(nb_dir.rglob("output.pdf"))
