"""`gpu-runner report` reads what the code under test wrote: no file it reads from results may be
reached through a symbolic link, at the file itself or at any folder between the results folder
given and it. A link at ``output.html`` to a file of the report machine would otherwise be printed
into the notebook's PDF (and the PDF uploaded with the report)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import gpu_runner
from report_fixtures.entries import build_entry, json_load

SECRET = "the-report-machines-secret-4f1c"


def _entry(root: Path) -> Path:
    return build_entry(root, "evil", runtime="pytorch", machine="l4", kinds=("pass",), checks=("ok",))


def _secret_file(tmp: Path) -> Path:
    f = tmp / "secret.html"
    f.write_text(f"<html><body><p>{SECRET}</p></body></html>")
    return f


def test_a_linked_output_html_is_neither_read_nor_printed(tmp_path: Path) -> None:
    """output.html -> a local file: the report warns, makes no page and no PDF of it."""
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler's pdftotext is not installed")
    root = tmp_path / "artifacts"
    entry = _entry(root)
    folder = entry / "notebooks/smoke"
    (folder / "output.html").unlink(missing_ok=True)
    (folder / "output.html").symlink_to(_secret_file(tmp_path))
    r = gpu_runner("report", str(root), "--pdf", cwd=tmp_path, timeout=240)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    assert "is a symbolic link" in r.stderr
    for pdf in root.rglob("*.pdf"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
        assert SECRET not in text, f"{pdf} printed the linked file"
    assert SECRET not in (root / "index.html").read_text()
    files = json_load(entry / "results.json")["notebooks"][0]["files"]
    assert "html" not in files and "pdf" not in files


@pytest.mark.parametrize("where", ["results.json", "notebook folder", "output.ipynb"])
def test_a_link_anywhere_on_the_way_to_a_file_the_report_reads_is_refused(tmp_path: Path, where: str) -> None:
    """A link at the file or at a folder inside the results tree (even one pointing inside it)."""
    root = tmp_path / "artifacts"
    entry = _entry(root)
    elsewhere = tmp_path / "elsewhere"
    if where == "results.json":
        elsewhere.mkdir()
        (entry / "results.json").rename(elsewhere / "results.json")
        (entry / "results.json").symlink_to(elsewhere / "results.json")
    elif where == "notebook folder":
        (entry / "notebooks/smoke").rename(entry / "notebooks/real")
        (entry / "notebooks/smoke").symlink_to(entry / "notebooks/real", target_is_directory=True)
    else:
        nb = entry / "notebooks/smoke/output.ipynb"
        nb.rename(nb.with_name("kept.ipynb"))
        nb.symlink_to(nb.with_name("kept.ipynb"))
    r = gpu_runner("report", str(root), "--no-pdf", cwd=tmp_path)
    assert "is a symbolic link" in r.stderr, r.stdout + r.stderr
    if where == "results.json":
        assert r.returncode == 2 and not (root / "index.html").exists()
    else:
        assert r.returncode in (0, 1)
        assert not (elsewhere.exists() and any(elsewhere.rglob("output.html")))
        page = entry / "notebooks/real/output.html" if where == "notebook folder" else None
        assert page is None or not page.exists()
        assert "html" not in json.loads((entry / "results.json").read_text())["notebooks"][0]["files"]
