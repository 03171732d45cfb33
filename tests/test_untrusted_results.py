"""Results are hostile input. A results.json (and the folder around it) comes from whatever ran on
the entry's machine, which on a pull request is the pull request's code. These tests are written
as that attacker: the report job must refuse what the schema refuses (exit 2, nothing written,
nothing posted), keep every path inside the results folder, and render every string as text: no
workflow command in the run log, no HTML, no mention, no comment marker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import gpu_runner, make_nb
from report_fixtures.entries import build_entry, json_load
from standins.github import GitHubStandIn
from standins.runner_log import commands, injected

from gpu_runner.report.dashboard import DashboardEntry, render_dashboard
from gpu_runner.results import EntryResult
from gpu_runner.results_validation import ResultsError, validate

REPO = "octo-org/runtime"
PWN = "\n::error::pwned\n::add-mask::hunter2\n::stop-commands::pwned\n##[error]pwned\n"
IMG = '<img src=x onerror="alert(1)">'
MARK_OTHER = "<!-- gpu-runner:summary other -->"


def _entry(root: Path, name: str = "evil") -> Path:
    return build_entry(root, name, runtime="pytorch", machine="l4", kinds=("pass", "error"), checks=("ok",))


def _poison(entry_dir: Path, edit) -> None:
    path = entry_dir / "results.json"
    data = json_load(path)
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _report(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return gpu_runner("report", *args, "--no-pdf", cwd=cwd, env=env)


# -- refused by the schema: exit 2, one line, nothing written ------------------------------------
SCHEMA_BREAKERS = {
    "html in status": (lambda d: d["notebooks"][1].update(status=IMG), "notebooks[1].status"),
    "entry status": (lambda d: d.update(status="pwned"), "status"),
    "absolute dir": (lambda d: d["notebooks"][0].update(dir="/tmp/gpu-runner-pwned"), "notebooks[0].dir"),
    "dot-dot dir": (lambda d: d["notebooks"][0].update(dir="notebooks/../../../pwned"), "notebooks[0].dir"),
    "absolute ipynb": (lambda d: d["notebooks"][0]["files"].update(ipynb="/etc/hostname.ipynb"),
                       "notebooks[0].files.ipynb"),
    "dot-dot artifact": (lambda d: d["checks"][0].update(artifacts=["../../secret.txt"]), "checks[0].artifacts[0]"),
    "unknown failure kind": (lambda d: d["notebooks"][1]["failure"].update(kind="<b>x</b>"),
                             "notebooks[1].failure.kind"),
    "a number that is text": (lambda d: d.update(duration_s="60"), "duration_s"),
    "an extra key": (lambda d: d["entry"].update(onload="x"), "entry"),
    "version": (lambda d: d.update(schema_version=99), "schema_version"),
}


@pytest.mark.parametrize("case", list(SCHEMA_BREAKERS))
def test_a_results_json_the_schema_refuses_is_exit_2_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    edit, where = SCHEMA_BREAKERS[case]
    root = tmp_path / "artifacts"
    good = _entry(root, "good")
    evil = _entry(root, "evil")
    _poison(evil, edit)
    (root / "summary.md").write_text("planted summary\n")  # a summary an earlier step (or the attacker) left
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    r = _report(str(root), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "evil/results.json" in r.stderr and where in r.stderr and "nothing reported" in r.stderr
    assert "good" not in r.stderr
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert not (root / "summary.md").exists()  # nothing left for a comment step to post
    assert {p for p in after if p not in before} == set()  # no HTML, no junit, no dashboard
    assert all(after[p] == before[p] for p in after)
    assert not Path("/tmp/gpu-runner-pwned").exists() and not (tmp_path / "pwned").exists()
    assert good.exists()


def test_the_schema_is_shipped_and_accepts_what_the_engine_writes(tmp_path: Path) -> None:
    from importlib import resources

    shipped = json.loads(resources.files("gpu_runner").joinpath("results.schema.json").read_text())
    from gpu_runner import results_schema

    assert shipped == results_schema.json_schema(), (
        "src/gpu_runner/results.schema.json is stale: python -m gpu_runner.results_schema --write-schema")
    validate(json_load(_entry(tmp_path) / "results.json"))
    with pytest.raises(ResultsError, match=r"notebooks\[0\]\.dir"):
        validate({**json_load(_entry(tmp_path) / "results.json"), "notebooks": [
            {"path": "a.ipynb", "dir": "/abs", "status": "passed", "duration_s": 1}]})


def test_schema_command_writes_and_checks(tmp_path: Path) -> None:
    from gpu_runner import results_schema

    target = tmp_path / "results.schema.json"
    assert results_schema._main(["--check-schema", "--path", str(target)]) == 1
    assert results_schema._main(["--write-schema", "--path", str(target)]) == 0
    assert results_schema._main(["--check-schema", "--path", str(target)]) == 0


# -- valid, but every string is the attacker's ------------------------------------------------------
def _hostile(root: Path) -> Path:
    entry = _entry(root)

    def edit(d: dict) -> None:
        d["entry"]["runtime"] = f"pytorch {IMG}"
        d["facts"]["gpu_model"] = f"A100 {IMG} @org/team"
        d["checks"][0]["name"] = f"gpu{IMG}"
        d["checks"][0]["summary"] = "ok @octocat"
        nb = d["notebooks"][1]
        nb["path"] = f"notebooks/divide{PWN}.ipynb"
        nb["files"] = {"ipynb": "notebooks/missing/output.ipynb"}  # makes report warn, naming the path
        f = nb["failure"]
        f["ename"] = f"ValueError{IMG}"
        f["evalue"] = f"cc @org/team and @octocat {MARK_OTHER}{PWN}"
        f["message"] = f"boom {IMG} @org/team{PWN}"
        f["traceback"] = f"Traceback\n  {MARK_OTHER}\n{IMG}\n@org/team{PWN}"
    _poison(entry, edit)
    return entry


def _as_github_renders(markdown: str) -> str:
    """summary.md as HTML, the way GitHub reads it: CommonMark with tables and raw HTML."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


def _actions_env(tmp_path: Path) -> dict[str, str]:
    summary, output = tmp_path / "step_summary.md", tmp_path / "github_output"
    summary.write_text("")
    output.write_text("")
    return {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output)}


def test_hostile_strings_run_no_workflow_command_and_render_as_text(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    _hostile(root)
    r = _report(str(root), cwd=tmp_path, env=_actions_env(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr  # a notebook failed: the report is written
    log = r.stdout + "\n" + r.stderr
    assert injected(log) == [], log
    assert not [c for c in commands(log) if c[1].startswith(("pwned", "hunter2"))], commands(log)
    # the real annotation: the whole message, its newlines escaped, is one command's data
    assert any(name == "error" and "ValueError" in data and "%0A::error::pwned" in data for name, data in commands(log))
    assert "pwned" in log  # the text is shown, as text

    summary = (root / "summary.md").read_text()
    dashboard = (root / "index.html").read_text()
    assert "<img" not in dashboard and "&lt;img" in dashboard and MARK_OTHER not in dashboard
    for text in (summary, (tmp_path / "step_summary.md").read_text()):
        assert MARK_OTHER not in text
        page = _as_github_renders(text)
        assert "<img" not in page and "&lt;img" in page  # text, in a table cell or a code block
        assert "<!--" not in page  # no HTML comment: no line of it can pass for a marker
        outside_code = re.sub(r"<(pre|code)>.*?</\1>", "", page, flags=re.S)
        assert "@org" in page and not re.search(r"@(?!\u200d)", outside_code), "a mention survived"
    csp = re.search(r'Content-Security-Policy" content="([^"]*)"', dashboard).group(1)
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0]


def test_the_comment_mentions_nobody_and_a_spoofed_marker_hijacks_no_comment(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    _hostile(root)
    assert _report(str(root), cwd=tmp_path).returncode == 1
    gh = GitHubStandIn(repo=REPO).start()
    try:
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"pull_request": {"number": 7}, "number": 7}))
        env = {"GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "test-token", "GITHUB_REPOSITORY": REPO,
               "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event)}
        first = gpu_runner("comment", str(root), "--key", "default", cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        (body,) = [c["body"] for c in gh.comments.values()]
        assert body.startswith("<!-- gpu-runner:summary default -->\n")
        assert body.count("<!--") == 1  # ours, on the first line; the traceback's is broken up or escaped
        assert _as_github_renders(body).count("<!--") == 1
        assert not re.search(r"@(?!\u200d)", body)
        assert "<img" not in _as_github_renders(body)
        # the other key's comment is its own: the traceback's marker does not make ours "theirs"
        other = tmp_path / "other"
        other.mkdir()
        (other / "summary.md").write_text("other matrix: all passed\n")
        second = gpu_runner("comment", str(other), "--key", "other", cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "created" in second.stdout and len(gh.comments) == 2
        assert [c["body"] for c in gh.comments.values()][0] == body
        assert not gh.rejected
    finally:
        gh.stop()


def test_a_report_that_is_refused_posts_nothing(tmp_path: Path) -> None:
    """The workflow's comment step after a refused report: there is no summary to post."""
    root = tmp_path / "artifacts"
    _poison(_entry(root), lambda d: d.update(status=IMG))
    (root / "summary.md").write_text("stale summary from an earlier report\n")
    assert _report(str(root), cwd=tmp_path).returncode == 2
    gh = GitHubStandIn(repo=REPO).start()
    try:
        env = {"GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "test-token", "GITHUB_REPOSITORY": REPO}
        r = gpu_runner("comment", str(root), "--pr", "7", cwd=tmp_path, env=env)
        assert r.returncode == 2 and "no such file" in r.stderr
        assert gh.comments == {} and gh.total_calls() == 0
    finally:
        gh.stop()


def test_a_symlink_out_of_the_results_folder_is_not_followed(tmp_path: Path) -> None:
    """A folder that leads elsewhere (locally, a symlink): no HTML written there, none read from there."""
    root = tmp_path / "artifacts"
    entry = _entry(root)
    outside = tmp_path / "outside"
    (outside / "smoke").mkdir(parents=True)
    (entry / "notebooks/smoke/output.ipynb").rename(outside / "smoke/output.ipynb")
    (entry / "notebooks/smoke").rmdir()
    (entry / "notebooks/smoke").symlink_to(outside / "smoke")
    r = _report(str(root), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "leads out of its results folder" in r.stderr
    assert sorted(p.name for p in (outside / "smoke").iterdir()) == ["output.ipynb"]  # nothing written outside
    assert 'href="evil/notebooks/smoke/output.ipynb"' not in (root / "index.html").read_text()


def test_markdown_images_are_embedded_only_from_the_notebooks_own_folder(tmp_path: Path) -> None:
    """A notebook cannot copy a file of the report machine into its HTML (then into the artifact)."""
    root = tmp_path / "artifacts"
    entry = _entry(root)
    (tmp_path / "secret.png").write_bytes(b"\x89PNG-the-report-machines-secret")
    folder = entry / "notebooks/smoke"
    (folder / "plot.png").write_bytes(b"\x89PNG-a-plot-the-notebook-made")
    (folder / "link.png").symlink_to(tmp_path / "secret.png")
    nb = json_load(folder / "output.ipynb")
    nb["cells"].insert(0, {"cell_type": "markdown", "metadata": {}, "source": (
        f"![a](plot.png) ![b](../../../../secret.png) ![c]({tmp_path / 'secret.png'}) ![d](link.png) "
        "<img src='../../../../secret.png'>")})
    (folder / "output.ipynb").write_text(json.dumps(nb))
    assert _report(str(root), cwd=tmp_path).returncode == 1
    import base64

    page = (folder / "output.html").read_text()
    assert base64.b64encode(b"\x89PNG-a-plot-the-notebook-made").decode() in page
    assert base64.b64encode(b"\x89PNG-the-report-machines-secret").decode()[:20] not in page


def test_the_dashboard_escapes_what_the_schema_would_refuse_too() -> None:
    """Defence in depth: a model built in-process (never through the schema) still renders as text."""
    result = EntryResult.from_dict({
        "schema_version": 1, "entry": {"id": "e"}, "status": "passed", "started_at": "", "finished_at": "",
        "duration_s": 1.0, "notebooks": [], "checks": []})
    result.status = IMG  # type: ignore[assignment]
    page = render_dashboard([DashboardEntry(result, Path("/nonexistent/e"))], Path("/nonexistent"))
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


# -- the run's own log: notebook names and exception messages ---------------------------------------
def test_notebook_names_and_exceptions_with_newlines_print_no_command(tmp_path: Path) -> None:
    work = tmp_path / "work"
    make_nb(work, "evil\n::error::pwned-name.ipynb",
            "raise ValueError('boom\\n::add-mask::hunter2\\n::error::pwned-exception\\n##[error]pwned')")
    make_nb(work, "fine.ipynb", "print('::error::pwned-output')")
    r = gpu_runner("run", str(work), "--no-pdf", "--no-checks", "--log", "py", "--jobs", "1", cwd=tmp_path,
                   env={"GITHUB_ACTIONS": "true", **{k: v for k, v in _actions_env(tmp_path).items()
                                                     if k != "GITHUB_ACTIONS"}})
    assert r.returncode == 1, r.stdout + r.stderr
    log = r.stdout + "\n" + r.stderr
    assert injected(log) == [], log
    assert not [c for c in commands(log) if c[1].startswith(("pwned", "hunter2"))], commands(log)
    assert "pwned-exception" in log and "pwned-name" in log and "pwned-output" in log  # shown as text
