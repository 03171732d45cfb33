"""gpu-runner runs and history against the GitHub stand-in: six runs with passes, failures, a flaky
notebook, one getting slower, an entry that did not run and artifacts that expired (listed with
``expired: true``, or answering 410 Gone on download), then the same views offline from the cache.

GitHub: an expired artifact is listed with ``expired: true`` and its download answers 410
(https://docs.github.com/rest/actions/artifacts#download-an-artifact); entry artifacts are kept 14
days and the report's 30 (``retention-days`` in gpu-entry.yml / gpu-notebooks.yml), so the report
artifact still holds an expired entry's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from standins.github import GitHubStandIn
from test_fetch import (
    PLAN,
    REPO,
    WF,
    entry,
    entry_zip,
    gh,  # noqa: F401 - the fixture
    make_zip,
    nb,
    no_capacity,
    ran,
    record_zip,
    report_job,
    run_main,
    zip_folder,
)

from gpu_runner.github import fetch as f
from gpu_runner.history import compute

FLAKY = ["passed", "failed", "passed", "failed", "passed", "passed"]
SLOW = [10.0, 10.5, 10.0, 15.0, 16.0, 18.0]
SHAS = ["1" * 40, "2" * 40, "3" * 40, "4" * 40, "5" * 40, "6" * 40]


def add_runs(gh: GitHubStandIn, tmp_path: Path) -> list[int]:
    """Six runs on main; in run 3 rt--h100 got no capacity; in run 5 its artifacts are listed expired
    (and so is the report); in run 6 its artifact answers 410 while the report still has it."""
    ids = []
    for i in range(6):
        l4 = entry("l4", [nb("nbs/a.ipynb", "passed", 10.0), nb("nbs/flaky.ipynb", FLAKY[i], 5.0 + i % 2)])
        a100 = entry("a100", [nb("nbs/a.ipynb", "passed", 10.0), nb("nbs/slow.ipynb", "passed", SLOW[i],
                                                                      mem=2000.0 + 300 * i)])
        h100 = entry("h100", [nb("nbs/a.ipynb", "passed", 9.0)])
        arts = {"gpu-runner-rt--l4": entry_zip(l4), "gpu-runner-rt--l4.record": record_zip(ran("rt--l4")),
                "gpu-runner-rt--a100": entry_zip(a100), "gpu-runner-rt--a100.record": record_zip(ran("rt--a100"))}
        if i == 2:
            arts["gpu-runner-rt--h100.record"] = record_zip(no_capacity("rt--h100"))
        else:
            arts["gpu-runner-rt--h100"] = entry_zip(h100)
            arts["gpu-runner-rt--h100.record"] = record_zip(ran("rt--h100"))
        job = report_job(arts, PLAN, tmp_path / f"job{i}")
        rid = gh.add_history_run(created_at=f"2025-02-0{i + 1}T10:00:00Z", duration_s=600 + 60 * i,
                                 head_sha=SHAS[i], conclusion="failure" if FLAKY[i] == "failed" else "success")
        for name, data in arts.items():
            gh.add_artifact(rid, name, data, expired=(i == 4 and "h100" in name), gone=(i == 5 and name ==
                                                                                      "gpu-runner-rt--h100"))
        gh.add_artifact(rid, "gpu-runner-report", zip_folder(job), expired=(i == 4))
        ids.append(rid)
    return ids


def test_runs_lists_each_run_with_its_verdict_per_entry(gh: GitHubStandIn, tmp_path: Path, capsys) -> None:
    ids = add_runs(gh, tmp_path)
    capsys.readouterr()
    assert run_main(["runs", "--workflow", WF, "--branch", "main", "--format", "json", "--limit", "10"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ids[::-1]  # newest first
    by_id = {r["id"]: r for r in rows}
    assert by_id[ids[0]]["entries"] == {"rt--l4": "passed", "rt--a100": "passed", "rt--h100": "passed"}
    assert by_id[ids[1]]["entries"]["rt--l4"] == "failed"
    assert by_id[ids[2]]["entries"]["rt--h100"] == "not run"
    assert by_id[ids[4]]["entries"]["rt--h100"] == "unknown"  # expired, and so was the report
    assert by_id[ids[5]]["entries"]["rt--h100"] == "passed"  # 410 on download: taken from the report artifact
    assert by_id[ids[2]]["entry_counts"] == {"passed": 2, "failed": 0, "not run": 1, "skipped": 0, "unknown": 0}
    assert by_id[ids[1]]["notebooks"] == {"passed": 4, "failed": 1, "skipped": 0, "total": 5}
    assert by_id[ids[3]]["duration_s"] == 780 and by_id[ids[3]]["head_sha"] == SHAS[3]
    calls = gh.total_calls()
    # the table, from the cache: no artifact is downloaded again
    assert run_main(["runs", "--workflow", WF, "--branch", "main"]) == 0
    table = capsys.readouterr().out
    assert f"#{ids[2] - 7000}" in table and "rt--h100 (not run)" in table and "rt--l4 (failed)" in table
    assert "13m00s" in table
    assert gh.calls["artifacts.blob"] == sum(gh.blob_downloads.values()) and gh.total_calls() - calls <= 3


def test_history_marks_the_flaky_notebook_and_the_slowing_one(gh: GitHubStandIn, tmp_path: Path, capsys,
                                                              monkeypatch) -> None:
    ids = add_runs(gh, tmp_path)
    out = tmp_path / "hist"
    capsys.readouterr()
    assert run_main(["history", "--workflow", WF, "--runs", "6", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "nbs/flaky.ipynb on l4: flaky" in text and "rt: nbs/slow.ipynb on a100: slower, more memory" in text
    hist = json.loads((out / "history.json").read_text())
    cells = {(c["notebook"], c["machine"]): c for c in hist["cells"]}
    assert cells[("rt: nbs/flaky.ipynb", "l4")]["marks"] == ["flaky"]
    assert cells[("rt: nbs/flaky.ipynb", "l4")]["pass_rate"] == pytest.approx(4 / 6)
    assert cells[("rt: nbs/slow.ipynb", "a100")]["marks"] == ["slower", "more memory"]
    assert cells[("rt: nbs/a.ipynb", "l4")]["marks"] == [] and cells[("rt: nbs/a.ipynb", "l4")]["pass_rate"] == 1
    h100 = [p["status"] for p in cells[("rt: nbs/a.ipynb", "h100")]["points"]]
    assert h100 == ["passed", "passed", "passed", "passed"]  # not run and expired runs have no notebook points
    assert [r["id"] for r in hist["runs"]] == ids
    page = (out / "history.html").read_text()
    assert page.count("<svg") == len(hist["cells"]) and "flaky" in page and "<script" not in page
    # each run's dashboard links to the page
    dash = tmp_path / "cache" / "octo-org" / "runtime" / str(ids[0]) / "1" / "results" / "index.html"
    assert "History across runs" in dash.read_text() and "../../../../../hist/history.html" in dash.read_text()

    # offline, no token: the same history from the cache, no API call
    monkeypatch.delenv("GITHUB_TOKEN")
    calls = gh.total_calls()
    assert run_main(["history", "--offline", "--runs", "6", "--out", str(out), "--format", "json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["cells"] == hist["cells"] and gh.total_calls() == calls
    assert run_main(["history", "--offline", "--runs", "6", "--branch", "nope", "--out", str(out)]) == 2


def test_flaky_on_one_commit_and_escaping() -> None:
    """Both outcomes on the same commit is flaky even without alternation; one regression is not."""
    def digest(i: int, sha: str, status: str, path: str = "nbs/<img src=x onerror=alert(1)>.ipynb") -> dict:
        return {"run": {"id": i, "run_number": i, "head_sha": sha, "created_at": f"2025-01-0{i}T00:00:00Z"},
                "entries": [{"id": "rt--l4", "runtime": "rt", "machine": "l4", "status": status,
                             "notebooks": [{"path": path, "status": status, "duration_s": 1.0,
                                            "gpu_peak_memory_mib": None}]}]}

    same = compute([digest(1, "a", "passed"), digest(2, "a", "failed"), digest(3, "b", "failed")])
    assert same["cells"][0]["flaky"] and "same commit (a)" in same["cells"][0]["flaky_why"]
    regression = compute([digest(1, "a", "passed"), digest(2, "b", "passed"), digest(3, "c", "failed"),
                          digest(4, "d", "failed")])
    assert regression["cells"][0]["marks"] == []
    from gpu_runner.report.history import render_history

    page = render_history(same, Path("."))
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_unknown_artifact_names_are_taken_as_they_come(gh: GitHubStandIn, tmp_path: Path, capsys) -> None:
    """Artifact names that carry the run attempt: the latest attempt of each is kept."""
    rid = gh.add_history_run(created_at="2025-02-01T10:00:00Z", attempt=2)
    gh.add_artifact(rid, "gpu-runner-rt--l4.attempt-1", entry_zip(entry("l4", [nb("nbs/a.ipynb", "failed", 5.0)])))
    gh.add_artifact(rid, "gpu-runner-rt--l4.attempt-2", entry_zip(entry("l4", [nb("nbs/a.ipynb", "passed", 5.0)])))
    gh.add_artifact(rid, "gpu-runner-weird name", make_zip({"x": b"y"}))
    assert run_main(["fetch", str(rid)]) == 0
    dash = Path(capsys.readouterr().out.strip())
    assert dash.parent.parent.name == "2"  # the run's attempt
    digest = json.loads((dash.parent.parent / f.DIGEST_FILE).read_text())
    assert [(e["id"], e["status"]) for e in digest["entries"]] == [("rt--l4", "passed")]
