"""Reports without a browser: JUnit (read back with junitparser and ElementTree), offline HTML,
summary.md, the dashboard's markup, GitHub workflow commands and the ``report`` command."""

from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from junitparser import JUnitXml
from report_fixtures.entries import build_entry, build_run, json_load

from gpu_runner.cli import main
from gpu_runner.github import workflow
from gpu_runner.report import PdfPrinter, write_entry_reports, write_run_reports
from gpu_runner.report.junit import junit_for
from gpu_runner.report.summary import render_summary
from gpu_runner.report.text import describe_failure, xml_safe
from gpu_runner.results import EntryInfo, EntryResult, Failure, NotebookResult, load_results


class Recorder:
    def __init__(self) -> None:
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        self.infos.append(msg)

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)


@pytest.fixture(scope="module")
def run_template(tmp_path_factory) -> Path:
    """The run with HTML and junit rendered once (no PDF: that is the browser module's job)."""
    root = tmp_path_factory.mktemp("run")
    dirs = build_run(root, execute=True)  # a real kernel gives the erroring notebook its traceback
    log = Recorder()
    for d in dirs:
        write_entry_reports(d, pdf=False, logger=log)
    root.joinpath("warnings.txt").write_text("\n".join(log.warnings))
    return root


@pytest.fixture()
def run(run_template, tmp_path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(run_template, dst)
    return dst


def entry_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/results.json"))


# -- JUnit -------------------------------------------------------------------------------
def test_entry_junit_reads_back_with_every_field_consumers_use(run):
    xml = JUnitXml.fromfile(str(run / "pytorch-a100" / "junit.xml"))
    suites = list(xml)
    assert [s.name for s in suites] == ["pytorch-a100"]
    suite = suites[0]
    props = {p.name: p.value for p in suite.properties()}
    assert props["runtime"] == "pytorch" and props["machine"] == "a100"
    assert props["gpu_model"] == "NVIDIA A100-SXM4-80GB"
    assert props["driver_version"] == "550.54.15" and props["cuda_version"] == "12.4"
    assert suite.tests == 7 and suite.failures == 4 and suite.skipped == 1 and suite.errors == 0
    cases = {c.name: c for c in suite}
    assert set(cases) == {"gpu", "cuda", "notebooks/smoke.ipynb", "notebooks/divide.ipynb",
                          "notebooks/train long.ipynb", "notebooks/oom.ipynb", "notebooks/multi_gpu.ipynb"}
    results = load_results(run / "pytorch-a100")
    divide = next(n for n in results.notebooks if n.path == "notebooks/divide.ipynb")

    err = cases["notebooks/divide.ipynb"]
    assert err._elem.get("file") == "notebooks/divide.ipynb"
    assert err._elem.get("line") == str(divide.failure.source_line)
    assert err.classname == "pytorch-a100.notebooks"
    (failure,) = err.result
    assert failure.type == "error"
    assert failure.message == "cell 3: ZeroDivisionError: division by zero"
    assert failure.text.startswith(failure.message)  # GitLab shows only the body
    assert "ZeroDivisionError" in failure.text and "\x1b" not in failure.text
    assert "red tail" in err.system_out and "\x1b" not in err.system_out and "\x07" not in err.system_out

    (t,) = cases["notebooks/train long.ipynb"].result
    assert t.type == "timeout" and t.message == "cell 2: timed out after 30 s"
    (k,) = cases["notebooks/oom.ipynb"].result
    assert k.type == "kernel_died" and "SIGKILL" in k.message and k.message.startswith("cell 2:")
    (s,) = cases["notebooks/multi_gpu.ipynb"].result
    assert type(s).__name__ == "Skipped" and s.message == "needs 2 GPUs, found 1"
    (c,) = cases["cuda"].result
    assert c.type == "check_failed" and "is_available" in c.message
    assert cases["cuda"].classname == "pytorch-a100.checks"


def test_the_line_attribute_points_at_the_cells_source_in_the_ipynb(run):
    # the annotation lands on this line of the notebook file: it must be where the failing cell's source starts
    results = load_results(run / "pytorch-a100")
    divide = next(n for n in results.notebooks if n.path == "notebooks/divide.ipynb")
    lines = (run / "pytorch-a100" / divide.files["ipynb"]).read_text().splitlines()
    assert '"source"' in lines[divide.failure.source_line - 1]
    assert "x / 0" in "\n".join(lines[divide.failure.source_line - 1: divide.failure.source_line + 3])


def test_every_suite_and_case_has_a_parseable_time_as_dorny_test_reporter_requires(run):
    write_run_reports(entry_dirs(run), run, logger=Recorder())
    for path in [run / "junit.xml", *(d / "junit.xml" for d in entry_dirs(run))]:
        root = ET.parse(path).getroot()
        assert root.tag == "testsuites" and float(root.get("time")) >= 0
        for el in root.iter():
            if el.tag in ("testsuite", "testcase"):
                assert el.get("name", "").strip()
                float(el.get("time"))
            if el.tag == "testcase":
                assert el.get("classname")


def test_merged_junit_counts_are_the_sum_of_the_entries(run):
    report = write_run_reports(entry_dirs(run), run, logger=Recorder())
    merged = JUnitXml.fromfile(str(report.junit_path))
    entries = [JUnitXml.fromfile(str(d / "junit.xml")) for d in entry_dirs(run)]
    for attr in ("tests", "failures", "errors", "skipped"):
        assert getattr(merged, attr) == sum(getattr(e, attr) for e in entries), attr
    assert sorted(s.name for s in merged) == sorted(d.name for d in entry_dirs(run))
    # people are told notebooks and checks apart (JUnit counts both as test cases)
    assert (report.passed, report.failed, report.skipped, report.total) == (3, 5, 2, 10)
    assert (report.checks_passed, report.checks_failed, report.checks_skipped, report.checks_total) == (2, 1, 1, 4)
    assert merged.tests == report.total + report.checks_total == 14


def test_xml_illegal_characters_and_ansi_never_reach_the_file(tmp_path):
    nasty = "bad\x00byte \x1b[31mred\x1b[0m \x0b\x0c \ud800 \ufffe end"
    nb = NotebookResult(path="nb.ipynb", dir="notebooks/nb", status="failed", duration_s=1.0,
                        failure=Failure(kind="error", message=nasty, cell_index=0, source_line=5, ename="ValueError",
                                        evalue=nasty, traceback=nasty, output_tail=nasty))
    result = EntryResult(entry=EntryInfo(id="e"), status="failed", started_at="", finished_at="", duration_s=1.0,
                         notebooks=[nb], facts={"gpu_model": nasty})
    from gpu_runner.report.junit import write_junit

    path = write_junit(junit_for([result]), tmp_path / "junit.xml")
    raw = path.read_text(encoding="utf-8")
    assert "\x1b" not in raw and "\x00" not in raw and "\x0b" not in raw
    ET.parse(path)  # a strict parser accepts it
    case = next(iter(next(iter(JUnitXml.fromfile(str(path))))))
    assert "red" in case.result[0].message
    assert xml_safe(nasty) == "badbyte red    end"


def test_failure_messages_name_the_cell_as_a_reader_counts_it():
    f = Failure(kind="error", message="", cell_index=0, ename="KeyError", evalue="'x'")
    assert describe_failure(f) == "cell 1: KeyError: 'x'"
    assert describe_failure(Failure(kind="kernel_died", message="", cell_index=4, signal="9")) == \
        "cell 5: kernel died (killed by SIGKILL)"
    assert describe_failure(Failure(kind="kernel_died", message="", exit_code=1)) == "kernel died (exit code 1)"
    assert describe_failure(Failure(kind="timeout", message="", cell_index=2, timeout_s=600.0)) == \
        "cell 3: timed out after 600 s"
    assert describe_failure(Failure(kind="rerun_error", message="", cell_index=1, ename="E", evalue="v")) == \
        "cell 2: on rerun, E: v"
    assert describe_failure(Failure(kind="setup_error", message="bad JSON\nat line 3")) == "bad JSON at line 3"


# -- HTML --------------------------------------------------------------------------------
_FETCH = re.compile(
    r"""<(?:script|link|img|iframe|source|video|audio|embed)\b[^>]*\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//"""
    r"""|@import\s+(?:url\()?\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//""",
    re.I,
)


def test_html_is_self_contained_and_the_banner_links_to_the_failing_cell(run):
    results = load_results(run / "pytorch-a100")
    for nb in results.notebooks:
        if nb.status == "skipped":
            assert "html" not in nb.files
            continue
        page = (run / "pytorch-a100" / nb.files["html"]).read_text(encoding="utf-8")
        assert not _FETCH.search(page), _FETCH.search(page).group(0)
        assert "<script src" not in page
        if nb.status == "failed":
            n = nb.failure.cell_number
            assert f'href="#cell-{n}"' in page and f'id="cell-{n}"' in page
            assert "gr-failed-cell" in page
        else:
            assert "✓ Passed" in page
    divide = (run / "pytorch-a100" / "notebooks/divide/output.html").read_text()
    assert "cell 3: ZeroDivisionError: division by zero" in divide
    assert "\x1b" not in divide


def test_pages_made_during_the_run_are_kept_only_while_still_right(run):
    from gpu_runner.report.html import BackgroundHtml, file_signature

    d = max(entry_dirs(run), key=lambda d: len(list(d.rglob("output.html"))))
    model = load_results(d)
    expected = {n.path: (d / n.dir / "output.html").read_bytes() for n in model.notebooks
                if (d / n.dir / "output.html").exists()}
    pages = BackgroundHtml()
    for nb in model.notebooks:
        if nb.path in expected:
            (d / nb.dir / "output.html").unlink()
            text = (d / nb.dir / "output.ipynb").read_text(encoding="utf-8")
            back = Path(os.path.relpath(d.parent / "index.html", d / nb.dir)).as_posix()
            pages.submit(d.name, d / nb.dir / "output.html", text, model, nb, resource_dir=str(d / nb.dir),
                         back=back)
    pages.wait(d.name)
    made = pages.made(d.name)
    pages.close()
    assert set(made) == set(expected)
    assert {p: (d / model_nb.dir / "output.html").read_bytes() for p, model_nb in
            ((n.path, n) for n in model.notebooks) if p in expected} == expected

    # the model changed for one page, the executed notebook of another: those two are made again
    changed, touched, *kept = sorted(expected)
    data = json_load(d / "results.json")
    for n in data["notebooks"]:
        if n["path"] == changed:
            n["duration_s"] = 4321.0
    (d / "results.json").write_text(__import__("json").dumps(data), encoding="utf-8")
    by_path = {n.path: n for n in model.notebooks}
    ipynb = d / by_path[touched].dir / "output.ipynb"
    ipynb.write_text(ipynb.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    before = {p: file_signature(d / by_path[p].dir / "output.html") for p in expected}
    write_entry_reports(d, pdf=False, made=made)
    after = {p: file_signature(d / by_path[p].dir / "output.html") for p in expected}
    assert before[changed] != after[changed] and "1 h 12 m" in (d / by_path[changed].dir / "output.html").read_text()
    assert before[touched] != after[touched]
    assert kept and all(before[p] == after[p] for p in kept)
    assert all((d / by_path[p].dir / "output.html").read_bytes() == expected[p] for p in kept)


def test_a_broken_or_missing_notebook_gets_a_warning_and_the_others_go_on(run):
    warnings = (run / "warnings.txt").read_text()
    assert "notebooks/broken.ipynb" in warnings and "no HTML" in warnings
    assert "notebooks/gone.ipynb" in warnings
    results = load_results(run / "jax-a100")
    by_path = {n.path: n for n in results.notebooks}
    assert "html" not in by_path["notebooks/broken.ipynb"].files
    assert "html" not in by_path["notebooks/gone.ipynb"].files
    assert (run / "jax-a100" / by_path["notebooks/smoke.ipynb"].files["html"]).is_file()
    # results.json was rewritten with the new paths and still loads
    assert json_load(run / "jax-a100" / "results.json")["notebooks"][0]["files"]["html"].endswith("output.html")


def test_no_chromium_means_one_warning_no_pdf_and_everything_else(tmp_path, monkeypatch):
    import gpu_runner.report.pdf as pdfmod

    monkeypatch.setenv("GPU_RUNNER_CHROMIUM", str(tmp_path / "no-such-chromium"))
    monkeypatch.setattr(pdfmod, "_warned", set())
    dirs = [build_entry(tmp_path, "a", kinds=("pass",), checks=()), build_entry(tmp_path, "b", kinds=("pass",), checks=())]
    log = Recorder()
    printer = PdfPrinter(logger=log)
    assert not printer.available
    for d in dirs:
        r = write_entry_reports(d, pdf=True, browser=printer, logger=log)
        assert "html" in r.notebooks[0].files and "pdf" not in r.notebooks[0].files
        assert (d / "junit.xml").is_file()
    for d in dirs:  # and without a shared printer
        write_entry_reports(d, pdf=True, logger=log)
    pdf_warnings = [w for w in log.warnings if "PDF" in w]
    assert len(pdf_warnings) == 1 and "GPU_RUNNER_CHROMIUM" in pdf_warnings[0]
    assert not list(tmp_path.rglob("*.pdf"))


# -- summary.md --------------------------------------------------------------------------
def test_summary_has_totals_rows_failures_durations_and_gpu_memory(run):
    report = write_run_reports(entry_dirs(run), run, logger=Recorder())
    text = report.summary_path.read_text()
    assert text.startswith("## ❌ GPU notebooks: 2 of 3 entries failed")
    # notebooks and checks counted apart, never summed
    assert "**10 notebooks: 3 passed, 5 failed, 2 skipped** · 4 system checks: 2 passed, 1 failed, 1 skipped" in text
    row = next(line for line in text.splitlines() if line.startswith("| <code>pytorch-a100</code> |"))
    assert "| 1 passed, 3 failed, 1 skipped | 1 passed, 1 failed |" in row  # 5 notebooks, 2 checks
    assert "<summary><code>pytorch-a100</code>: 5 notebooks: 1 passed, 3 failed, 1 skipped</summary>" in text
    # the matrix's order (runtimes pytorch, jax; machines l4, a100), not the alphabet's
    at = {entry: text.index(f"| <code>{entry}</code>") for entry in ("pytorch-a100", "pytorch-l4", "jax-a100")}
    assert at["pytorch-l4"] < at["pytorch-a100"] < at["jax-a100"]
    assert "(ran locally)" in text
    assert "| <code>pytorch-a100</code> | <code>notebooks/divide.ipynb</code> | 3 | error | ZeroDivisionError: division by zero |" in text
    assert "| 2 | timeout | timed out after 30 s |" in text
    assert "kernel died (killed by SIGKILL)" in text
    assert "1,536 MiB" in text and "77.1 GiB" in text and "30.0 s" in text
    assert "\x1b" not in text


def _many_failures(n_entries: int, n_nb: int) -> list[EntryResult]:
    out = []
    for i in range(n_entries):
        nbs = [NotebookResult(path=f"notebooks/deep/folder/nb_{j}|x.ipynb", dir=f"notebooks/n{j}", status="failed",
                              duration_s=1.0, gpu_peak_memory_mib=100.0,
                              failure=Failure(kind="error", message="m", cell_index=j, ename="RuntimeError",
                                              evalue="CUDA out of memory. " * 10, traceback="Traceback\n" * 50))
               for j in range(n_nb)]
        out.append(EntryResult(entry=EntryInfo(id=f"rt{i}-m{i}", runtime=f"rt{i}", machine="a100"), status="failed",
                               started_at="", finished_at="", duration_s=10.0, notebooks=nbs))
    return out


def test_summary_is_bounded_and_says_what_was_cut():
    text = render_summary(_many_failures(40, 25))
    assert len(text) <= 60_000
    assert "✂️ Cut to stay within 60,000 characters" in text
    assert "left out" in text
    assert text.startswith("## ❌")
    assert "nb\\_0\\|x.ipynb" in text  # table cells escaped: a | in a name does not break the table
    small = render_summary(_many_failures(1, 2))
    assert "Cut" not in small


# -- dashboard markup ---------------------------------------------------------------------
def test_dashboard_links_are_relative_and_resolve_from_elsewhere(run, tmp_path):
    out = tmp_path / "site"
    report = write_run_reports(entry_dirs(run), out, logger=Recorder())
    page = report.dashboard_path.read_text()
    hrefs = re.findall(r'href="([^"#][^"]*)"', page)
    assert hrefs and not [h for h in hrefs if h.startswith(("/", "file:", "http"))]
    for h in hrefs:
        from urllib.parse import unquote

        assert (out / unquote(h.split("#")[0])).resolve().exists(), h
    assert "default-src 'none'" in page
    assert not _FETCH.search(page)


def test_dashboard_of_a_local_run_without_a_matrix_has_one_cell(tmp_path):
    d = build_entry(tmp_path, "local", provider="local", ran_locally=True, kinds=("pass",), checks=(), facts={})
    report = write_run_reports([d], tmp_path, logger=Recorder())
    page = report.dashboard_path.read_text()
    assert page.count('class="tile ') == 1
    assert ">this machine<" in page and "ran locally" not in page
    assert report.exit_code == 0


# -- GitHub Actions ----------------------------------------------------------------------
def test_workflow_command_escaping():
    assert workflow.escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert workflow.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    line = workflow.command("error", "x\ny", file="nb, one.ipynb", line=3, title="e: f", col=None)
    assert line == "::error file=nb%2C one.ipynb,line=3,title=e%3A f::x%0Ay"


def test_in_github_actions_annotations_summary_and_outputs(run, monkeypatch, capsys, tmp_path):
    out_file, summary_file = tmp_path / "out", tmp_path / "summary"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(out_file))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    report = write_run_reports(entry_dirs(run), run, logger=Recorder())
    stdout = capsys.readouterr().out
    errors = [line for line in stdout.splitlines() if line.startswith("::error")]
    assert len(errors) == 6 == report.annotations and report.annotations_left_out == 0
    divide = next(e for e in errors if "divide" in e)
    line = load_results(run / "pytorch-a100").notebooks[1].failure.source_line
    assert divide.startswith(f"::error file=notebooks/divide.ipynb,line={line},title=pytorch-a100%3A ")
    assert "%0A" in divide.split("::", 2)[2] and "\n" not in divide
    outputs = out_file.read_text()
    assert "passed=3\nfailed=5\nskipped=2\ntotal=10\n" in outputs and f"results-dir={run}\n" in outputs
    assert "checks-passed=2\nchecks-failed=1\nchecks-skipped=1\nchecks-total=4\n" in outputs
    assert summary_file.read_text() == report.summary_path.read_text()


def test_annotations_stay_within_githubs_limits_and_say_how_many_were_left_out(tmp_path, monkeypatch, capsys):
    import io

    anns = [workflow.Annotation(message=f"m{i}", title=f"t{i}", file="a.ipynb", line=i + 1) for i in range(23)]
    buf = io.StringIO()
    shown, left = workflow.annotate_errors(anns, stream=buf)
    lines = buf.getvalue().splitlines()
    assert (shown, left) == (10, 13)
    assert sum(line.startswith("::error") for line in lines) == 10
    assert lines[-1].startswith("::warning") and "13 more failure(s) not annotated" in lines[-1]


def test_step_summary_never_passes_one_mebibyte(tmp_path):
    f = tmp_path / "summary"
    f.write_bytes(b"x" * (1024 * 1024 - 500))
    assert workflow.append_step_summary("y" * 5000, f)
    assert f.stat().st_size <= 1024 * 1024
    assert "limited to 1 MiB" in f.read_text()


def test_outputs_with_newlines_use_a_delimiter(tmp_path):
    f = tmp_path / "out"
    workflow.set_outputs({"a": "1", "b": "x\ny"}, f)
    text = f.read_text()
    assert text.startswith("a=1\nb<<ghadelimiter_")
    assert "\nx\ny\nghadelimiter_" in text


# -- the report command --------------------------------------------------------------------
def _exit(argv) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def test_report_command_exit_codes(run, tmp_path, capsys):
    # downloaded artifacts: entry folders in one place, reports missing
    for f in run.rglob("junit.xml"):
        f.unlink()
    out = tmp_path / "merged"
    assert _exit(["report", str(run), "--out", str(out), "--no-pdf"]) == 1
    assert {p.name for p in out.iterdir()} >= {"junit.xml", "summary.md", "index.html"}
    assert (out / "pytorch-a100" / "junit.xml").is_file()  # rendered where absent, in the copy in --out
    assert not (run / "pytorch-a100" / "junit.xml").exists()  # the input is left as it was

    passing = tmp_path / "passing"
    build_entry(passing, "ok", kinds=("pass",), checks=("ok",))
    assert _exit(["report", str(passing), "--no-pdf"]) == 0
    assert (passing / "ok" / "notebooks/smoke/output.html").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert _exit(["report", str(empty), "--no-pdf"]) == 2
    assert "no results.json" in capsys.readouterr().err
    assert _exit(["report", str(tmp_path / "nope"), "--no-pdf"]) == 2


def test_runs_of_plain_paths_merged_by_report_are_named_apart(tmp_path):
    """Every run without a matrix is the entry ``local``: merged, each is named by its folder."""
    for run_dir in ("run-a", "run-b"):
        build_entry(tmp_path / run_dir, "local", provider="local", ran_locally=True, kinds=("pass",), checks=("ok",))
    write_entry_reports(tmp_path / "run-a/local", pdf=False, logger=Recorder())  # as its own run left it
    before = (tmp_path / "run-a/local/notebooks/smoke/output.html").read_text()
    assert 'class="gr-back" href="../../../index.html"' in before
    with pytest.raises(SystemExit) as info:
        main(["report", str(tmp_path / "run-a"), str(tmp_path / "run-b"), "--out", str(tmp_path / "merged"),
              "--no-pdf"])
    assert info.value.code == 0
    summary = (tmp_path / "merged/summary.md").read_text()
    assert "| <code>run-a/local</code> |" in summary and "| <code>run-b/local</code> |" in summary
    page = (tmp_path / "merged/index.html").read_text()
    names = re.findall(r'<span class="entry-id">([^<]*)</span>', page)
    assert "run-a/local" in names and "run-b/local" in names
    rows = re.findall(r'<tr><th scope="row">([^<]*)</th>', page)
    assert rows == ["run-a/local", "run-b/local"]  # two rows of the grid, not two tiles in one cell
    # each notebook page was rendered for its own run's dashboard; its copy points at the merged one
    assert (tmp_path / "run-a/local/notebooks/smoke/output.html").read_text() == before
    html = (tmp_path / "merged/run-a/local/notebooks/smoke/output.html").read_text()
    assert 'class="gr-back" href="../../../../index.html"' in html


def test_notebook_pages_link_back_to_the_dashboard_beside_the_entries(run):
    write_entry_reports(run / "pytorch-a100", pdf=False, logger=Recorder())
    html = (run / "pytorch-a100/notebooks/divide/output.html").read_text()
    assert '<a class="gr-back" href="../../../index.html">' in html
