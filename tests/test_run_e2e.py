"""The whole local pipe as a user runs it: notebooks -> results -> every report."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from junitparser import JUnitXml

from conftest import FIXTURE_NOTEBOOKS, REPO, by_path, gpu_runner, results
from gpu_runner.report.pdf import find_chromium

pytestmark = pytest.mark.slow


def _needs_chromium() -> None:
    if find_chromium() is None:
        import os

        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (apt-get install chromium)")
        pytest.skip("Chromium not installed")


def _same_pages_as_the_reports_make(entry_dir, scratch) -> int:
    """The pages a run made while its notebooks ran are, byte for byte, those the reports make
    afterwards from the entry's results.json; so is the results.json that lists them."""
    from gpu_runner.report import write_entry_reports

    copy = scratch / entry_dir.name
    shutil.copytree(entry_dir, copy)
    for page in copy.rglob("output.html"):
        page.unlink()
    write_entry_reports(copy, pdf=False)
    pages = sorted(p.relative_to(entry_dir) for p in entry_dir.rglob("output.html"))
    assert pages == sorted(p.relative_to(copy) for p in copy.rglob("output.html"))
    for rel in pages:
        assert (entry_dir / rel).read_bytes() == (copy / rel).read_bytes(), rel
    assert (entry_dir / "results.json").read_bytes() == (copy / "results.json").read_bytes()
    return len(pages)


def test_failing_notebooks_leave_every_report(tmp_path):
    _needs_chromium()
    work = tmp_path / "repo"
    shutil.copytree(FIXTURE_NOTEBOOKS, work / "nbs")
    r = gpu_runner("run", "nbs", "--cell-timeout", "2", "--out", "out", cwd=work)
    assert r.returncode == 1, r.stdout + r.stderr
    out = work / "out"
    res = results(out)
    nbs = by_path(res)
    kinds = {p: (n["failure"] or {}).get("kind") for p, n in nbs.items()}
    assert kinds == {"nbs/passes.ipynb": None, "nbs/error.ipynb": "error", "nbs/hang.ipynb": "timeout",
                     "nbs/killed.ipynb": "kernel_died", "nbs/no_kernel.ipynb": "setup_error",
                     "nbs/not_json.ipynb": "setup_error"}

    # JUnit per entry and merged, read back; the merged counts are the entry's
    entry = JUnitXml.fromfile(str(out / "local/junit.xml"))
    merged = JUnitXml.fromfile(str(out / "junit.xml"))
    assert (merged.tests, merged.failures, merged.skipped) == (entry.tests, entry.failures, entry.skipped)
    assert entry.failures == 5
    cases = {c.name: c for suite in merged for c in suite}
    assert sorted(c for c in cases if c.startswith("nbs/")) == sorted(nbs)
    err = cases["nbs/error.ipynb"]
    assert err._elem.get("file") == "nbs/error.ipynb"
    assert int(err._elem.get("line")) == nbs["nbs/error.ipynb"]["failure"]["source_line"]
    assert err.result[0].type == "error" and "ValueError" in err.result[0].message

    # HTML and PDF for every notebook that has an executed notebook to show; a banner for the failing ones
    for path, n in nbs.items():
        folder = out / "local" / n["dir"]
        if path == "nbs/not_json.ipynb":
            assert not (folder / "output.html").exists()
            continue
        html = (folder / "output.html").read_text()
        assert "<script src=\"http" not in html
        assert (folder / "output.pdf").read_bytes().startswith(b"%PDF")
    pages = subprocess.run(["pdfinfo", str(out / "local/notebooks/nbs/error/output.pdf")], capture_output=True,
                           text=True)
    assert pages.returncode != 0 or "Pages:" in pages.stdout

    assert _same_pages_as_the_reports_make(out / "local", tmp_path / "again") == 5

    summary = (out / "summary.md").read_text()
    assert "nbs/error.ipynb" in summary and "| timeout |" in summary and "| kernel died |" in summary
    assert (out / "index.html").is_file()


def test_the_readme_main_command_passes_here_without_a_gpu(tmp_path):
    repo = tmp_path / "repo"
    for part in ("matrix", "notebooks"):
        shutil.copytree(REPO / part, repo / part)
    r = gpu_runner("run", "--matrix", "matrix/example.yml", "--no-pdf", cwd=repo)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    entries = sorted(p.parent.name for p in (repo / "results").glob("*/results.json"))
    assert entries == ["jax--local", "pytorch--local"]
    for e in entries:
        res = results(repo / "results", e)
        assert res["entry"]["runtime"] in ("pytorch", "jax") and res["entry"]["machine"] == "local"
        gpu = [n for n in res["notebooks"] if n["path"] == "notebooks/gpu_torch.ipynb"]
        assert all(n["status"] == "skipped" for n in gpu)
        assert _same_pages_as_the_reports_make(repo / "results" / e, tmp_path / "again") > 0
    assert (repo / "results/index.html").is_file() and (repo / "results/junit.xml").is_file()


def test_local_flag_runs_cloud_entries_here_and_marks_them(tmp_path):
    repo = tmp_path / "repo"
    for part in ("matrix", "notebooks"):
        shutil.copytree(REPO / part, repo / part)
    r = gpu_runner("run", "--matrix", "matrix/example.yml", "--runtime", "jax", "--machine", "l4", "--local",
                   "--no-pdf", "--no-checks", cwd=repo)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (entry,) = [p.parent for p in (repo / "results").glob("*/results.json")]
    info = results(repo / "results", entry.name)["entry"]
    assert info["machine"] == "l4" and info["provider"] == "gce" and info["ran_locally"] is True
