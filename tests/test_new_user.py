"""What a new user meets first: reports that leave their input alone, comparisons that say when
nothing compared, entries left out said aloud, usage errors, and wording that reads right."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from conftest import REPO, gpu_runner, make_nb


def _digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its content: to show a folder was left as it was."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_run(tmp_path: Path, out: str = "results", *, code: str = "print('ok')") -> Path:
    make_nb(tmp_path, "notebooks/a.ipynb", code)
    r = gpu_runner("run", "notebooks/a.ipynb", "--out", out, "--no-pdf", "--no-checks", cwd=tmp_path)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return tmp_path / out


def test_report_into_another_folder_leaves_its_input_as_it_was(tmp_path):
    results = _one_run(tmp_path, code="1/0")
    for page in results.rglob("output.html"):  # as downloaded artifacts without pages
        page.unlink()
    (results / "local/junit.xml").unlink()
    before = _digest(results)
    r = gpu_runner("report", "results", "--out", "merged", "--no-pdf", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert _digest(results) == before
    merged = tmp_path / "merged"
    assert (merged / "index.html").is_file() and (merged / "local/junit.xml").is_file()
    assert list((merged / "local").rglob("output.html"))
    # the dashboard links to the pages beside it, in the copy
    assert 'href="local/notebooks/a/output.ipynb"' in (merged / "index.html").read_text()
    # again: the earlier copy is replaced, the input still untouched
    r = gpu_runner("report", "results", "--out", "merged", "--no-pdf", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert _digest(results) == before


def test_a_baseline_with_no_notebook_in_common_says_nothing_could_be_compared(tmp_path):
    _one_run(tmp_path, "base")
    make_nb(tmp_path, "notebooks/b.ipynb", "print('b')")
    r = gpu_runner("run", "notebooks/b.ipynb", "--out", "new", "--no-pdf", "--no-checks", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = gpu_runner("report", "new", "--baseline", "base", "--no-pdf", cwd=tmp_path)
    text = r.stdout + r.stderr
    assert "nothing could be compared" in text, text
    assert "notebooks/b.ipynb" in text and "notebooks/a.ipynb" in text  # why: the names differ
    summary = (tmp_path / "new/summary.md").read_text()
    assert "nothing could be compared" in summary
    assert "nothing could be compared" in (tmp_path / "new/index.html").read_text().lower()


def test_a_notebooks_name_does_not_depend_on_the_folder_the_run_started_in(tmp_path):
    (tmp_path / ".git").mkdir()  # the repository's root
    make_nb(tmp_path, "notebooks/a.ipynb", "print('a')")
    r1 = gpu_runner("run", "notebooks/a.ipynb", "--out", str(tmp_path / "r1"), "--no-pdf", "--no-checks",
                    cwd=tmp_path)
    r2 = gpu_runner("run", "a.ipynb", "--out", str(tmp_path / "r2"), "--no-pdf", "--no-checks",
                    cwd=tmp_path / "notebooks")
    assert r1.returncode == r2.returncode == 0, r1.stdout + r2.stdout + r2.stderr
    import json

    names = [json.loads((tmp_path / r / "local/results.json").read_text())["notebooks"][0]["path"]
             for r in ("r1", "r2")]
    assert names == ["notebooks/a.ipynb", "notebooks/a.ipynb"]
    r = gpu_runner("report", "r2", "--baseline", "r1", "--no-pdf", cwd=tmp_path)
    assert "nothing could be compared" not in r.stdout + r.stderr


def test_run_matrix_says_which_entries_it_left_out_and_how_to_run_them(tmp_path):
    shutil.copytree(REPO / "matrix", tmp_path / "matrix")
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    (tmp_path / ".git").mkdir()
    r = gpu_runner("run", "--matrix", "matrix/example.yml", "--out", "out", "--no-pdf", "--no-checks",
                   cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout + r.stderr
    line = next(x for x in text.splitlines() if "not run here" in x)
    for e in ("pytorch--l4", "pytorch--t4", "pytorch--a100x4", "jax--cpu", "jax--l4", "jax--a100x4"):
        assert e in line
    assert "6 of 8 entries" in line and "--local" in line
    page = (tmp_path / "out/index.html").read_text()
    assert "6 of 8 entries" in page and "jax--a100x4" in page
    assert "<code>gpu-runner run --matrix matrix/example.yml --local</code>" in page  # the command, not backticks
    summary = (tmp_path / "out/summary.md").read_text()
    assert summary.startswith("## ") and "6 of 8 entries not run here" in summary


def test_a_path_that_is_no_notebook_is_a_usage_error(tmp_path):
    (tmp_path / "plain.txt").write_text("hello\n")
    r = gpu_runner("run", "plain.txt", "--no-pdf", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "plain.txt" in r.stderr and "not a notebook" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "results").exists()


def test_a_notebook_that_is_not_json_is_reported_once_relative_to_where_the_command_ran(tmp_path):
    bad = tmp_path / "nbs/sub/broken.ipynb"
    bad.parent.mkdir(parents=True)
    bad.write_text("{ not json")
    r = gpu_runner("run", "nbs", "--out", "out", "--no-pdf", "--no-checks", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    text = r.stdout + r.stderr
    said = [line for line in text.splitlines() if "not valid JSON" in line or "not a readable notebook" in line]
    assert len(said) == 1, said
    assert "nbs/sub/broken.ipynb is not valid JSON" in said[0]


def test_python_given_as_a_command_line_says_it_takes_one_path(tmp_path):
    import sys

    make_nb(tmp_path, "a.ipynb", "print(1)")
    r = gpu_runner("run", "a.ipynb", "--no-pdf", "--no-checks", "--python", f"{sys.executable} -I", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--python: the runtime's Python takes one path or command name, without arguments" in r.stderr
    assert "Traceback" not in r.stderr


def test_wording_one_entry_no_red_zero_no_empty_checks(tmp_path):
    _one_run(tmp_path)
    page = (tmp_path / "results/index.html").read_text()
    assert "1 entries" not in page and "All 1 entries" not in page
    assert "1 of 1 entry passed" in page
    assert 'class="stat s-failed"><span class="n">0<' not in page  # a 0 failures count is not red
    assert "0/0" not in page and "system checks passed" not in page  # --no-checks: no checks stat


def test_help_summaries_are_whole_sentences(tmp_path):
    r = gpu_runner("--help", cwd=tmp_path)
    assert r.returncode == 0
    commands = r.stdout.split("Commands:")[1]
    assert "..." not in commands, commands
    entries: list[str] = []
    for line in commands.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            entries.append(line.strip())
        elif line.strip():
            entries[-1] += " " + line.strip()
    assert len(entries) >= 8
    for entry in entries:
        assert entry.endswith("."), entry


def test_plan_table_column_headers_say_what_they_hold(tmp_path):
    r = gpu_runner("plan", "--matrix", str(REPO / "matrix/example.yml"), "--format", "table", cwd=REPO,
                   env={"COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    head = next(line for line in r.stdout.splitlines() if line.strip().startswith("id"))
    assert "$/hour, VMs" not in head
    assert "$/h per VM" in head and "max $" in head
