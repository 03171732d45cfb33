"""gpu-runner baseline fetch through PyGithub against the GitHub stand-in (workflow runs and
artifacts in their published shapes, the artifact download a 302 to another host that refuses
the token): which run is the baseline for a pull request and for a push, "no baseline" in each
of its forms, and artifacts as hostile zip files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import gpu_runner, make_zip
from standins.github import GitHubStandIn, github_standin

from gpu_runner.cli import main
from gpu_runner.errors import InfraError
from gpu_runner.github import baseline as base
from gpu_runner.results import EntryInfo, EntryResult, NotebookResult

REPO = "octo-org/runtime"
CURRENT_RUN = 5150
BEFORE = "b" * 40


def results_json(entry_id: str, duration: float = 10.0) -> bytes:
    r = EntryResult(entry=EntryInfo(id=entry_id), status="passed", started_at="", finished_at="", duration_s=1.0,
                    notebooks=[NotebookResult(path="nbs/a.ipynb", dir="notebooks/nbs/a", status="passed",
                                              duration_s=duration, gpu_peak_memory_mib=1000.0)])
    return json.dumps(r.to_dict()).encode()


def entry_artifact(entry_id: str, duration: float = 10.0) -> bytes:
    """What the run job uploads: the entry folder, notebooks and all."""
    return make_zip({f"{entry_id}/results.json": results_json(entry_id, duration),
                     f"{entry_id}/notebooks/nbs/a/output.ipynb": b"{}",
                     f"{entry_id}/notebooks/nbs/a/metrics.json": b"{}"})


@pytest.fixture
def gh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for s in github_standin(monkeypatch, REPO):
        monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
        monkeypatch.setenv("GITHUB_RUN_ID", str(CURRENT_RUN))
        yield s


def event(monkeypatch, tmp_path, name: str, payload: dict) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(path))
    monkeypatch.setenv("GITHUB_EVENT_NAME", name)


PR = {"pull_request": {"number": 7, "base": {"ref": "main", "sha": "c" * 40}, "head": {"ref": "feature"}}}


def test_a_pull_request_compares_with_the_latest_successful_run_on_its_base_branch(gh, monkeypatch, tmp_path):
    event(monkeypatch, tmp_path, "pull_request", PR)
    good = gh.add_run(head_sha="1" * 40, artifacts={"gpu-runner-a--l4": entry_artifact("a--l4"),
                                                    "gpu-runner-b--l4": entry_artifact("b--l4"),
                                                    "gpu-runner-report": make_zip({"x/results.json": b"{}"})})
    gh.add_run(head_sha="2" * 40, conclusion="failure", artifacts={"gpu-runner-a--l4": entry_artifact("a--l4", 99)})
    gh.add_run(head_branch="main", event="pull_request", head_repo="mallory/runtime",  # a fork's branch called main
               artifacts={"gpu-runner-a--l4": entry_artifact("a--l4", 1)})
    gh.add_run(head_branch="feature", artifacts={"gpu-runner-a--l4": entry_artifact("a--l4", 2)})
    out = tmp_path / "baseline"
    got = base.fetch(out)
    assert got.found and got.run_id == good and got.description == f"run #{good - 7000} on main (1111111)"
    assert got.entries == ["a--l4/results.json", "b--l4/results.json"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "a--l4/results.json", "b--l4/results.json", "baseline.json"]  # the notebooks stay behind
    assert json.loads((out / "a--l4/results.json").read_bytes())["notebooks"][0]["duration_s"] == 10.0
    recorded = json.loads((out / "baseline.json").read_text())
    assert recorded["found"] and recorded["html_url"] == f"https://github.com/{REPO}/actions/runs/{good}"
    assert [a["name"] for a in recorded["artifacts"]] == ["gpu-runner-a--l4", "gpu-runner-b--l4"]
    assert gh.calls["artifacts.blob"] == 2 and gh.leaked_auth == [] and not gh.rejected
    assert gh.calls["runs.get"] == 1  # this run, for its workflow id


def test_a_push_compares_with_the_run_of_the_previous_commit(gh, monkeypatch, tmp_path):
    event(monkeypatch, tmp_path, "push", {"before": BEFORE, "after": "d" * 40})
    gh.add_run(head_sha="e" * 40, artifacts={"gpu-runner-a--l4": entry_artifact("a--l4", 1)})
    prev = gh.add_run(head_sha=BEFORE, artifacts={"gpu-runner-a--l4": entry_artifact("a--l4", 7)})
    gh.add_run(head_sha="f" * 40, artifacts={"gpu-runner-a--l4": entry_artifact("a--l4", 3)})
    got = base.fetch(tmp_path / "b")
    assert got.found and got.run_id == prev and got.head_sha == BEFORE


def test_a_re_run_baseline_is_its_latest_attempt(gh, monkeypatch, tmp_path):
    """A run whose failed jobs were re-run holds both attempts' artifacts (names carry the attempt):
    the baseline is each entry's latest attempt, whatever the order GitHub lists them in, and within
    it the last try (a retry after a preemption)."""
    event(monkeypatch, tmp_path, "push", {"before": BEFORE, "after": "d" * 40})
    gh.add_run(head_sha=BEFORE, artifacts={
        "gpu-runner-a--l4.attempt-2": entry_artifact("a--l4", 2),
        "gpu-runner-a--l4.attempt-1.retry-1": entry_artifact("a--l4", 11),
        "gpu-runner-a--l4.attempt-1": entry_artifact("a--l4", 10),
        "gpu-runner-b--l4.attempt-1": entry_artifact("b--l4", 20),
        "gpu-runner-b--l4.attempt-1.retry-1": entry_artifact("b--l4", 21)})
    out = tmp_path / "b"
    got = base.fetch(out)
    assert got.found
    taken = {e: json.loads((out / e / "results.json").read_bytes())["notebooks"][0]["duration_s"]
             for e in ("a--l4", "b--l4")}
    assert taken == {"a--l4": 2, "b--l4": 21}


@pytest.mark.parametrize("name,payload,setup,reason", [
    ("pull_request", PR, lambda gh: None, "no successful run of this workflow on the base branch 'main' yet"),
    ("push", {"before": BEFORE}, lambda gh: gh.add_run(head_sha=BEFORE, conclusion="failure"),
     "the previous commit bbbbbbb has no successful run of this workflow"),
    ("push", {"before": "0" * 40}, lambda gh: None,
     "this push created the branch: there is no previous commit to compare with"),
    ("pull_request", PR, lambda gh: gh.add_run(artifacts={"gpu-runner-a--l4": entry_artifact("a--l4")}, expired=True),
     "the artifacts of run #1 on main (aaaaaaa) have expired"),
    ("pull_request", PR, lambda gh: gh.add_run(artifacts={"other": b"x"}),
     "run #1 on main (aaaaaaa) has no gpu-runner results artifacts"),
])
def test_no_baseline_is_said_once_and_exits_0(gh, monkeypatch, tmp_path, capsys, name, payload, setup, reason):
    event(monkeypatch, tmp_path, name, payload)
    setup(gh)
    out = tmp_path / "baseline"
    with pytest.raises(SystemExit) as e:
        main(["baseline", "fetch", "--out", str(out)])
    assert e.value.code == 0
    said = capsys.readouterr()
    assert (said.out + said.err).count("no baseline") == 1 and reason in said.out
    recorded = json.loads((out / "baseline.json").read_text())
    assert (recorded["found"], recorded["reason"]) == (False, reason)


def test_an_expired_artifact_between_listing_and_download_is_gone(gh, monkeypatch, tmp_path):
    event(monkeypatch, tmp_path, "pull_request", PR)
    gh.add_run(artifacts={"gpu-runner-a--l4": entry_artifact("a--l4")})
    for a in gh.artifacts.values():
        a["expired"] = True  # the download answers 410
    got = base.fetch(tmp_path / "b")
    assert not got.found and "expired" in got.reason


def test_hostile_zips_leave_nothing_outside_the_folder(gh, monkeypatch, tmp_path):
    event(monkeypatch, tmp_path, "pull_request", PR)
    monkeypatch.setattr(base, "MAX_RESULTS_BYTES", 4096)
    ok = results_json("ok--l4")
    bomb = b" " * (50 * 2**20)  # 50 MiB of spaces: a few kB compressed
    gh.add_run(artifacts={
        "gpu-runner-evil": make_zip({
            "../escaped/results.json": ok, "/abs/results.json": ok, "ok--l4/../../up/results.json": ok,
            "C:/win/results.json": ok, "back\\slash/results.json": ok, "bomb--l4/results.json": bomb,
            "notjson--l4/results.json": b"<html>", "ok--l4/results.json": ok, "ok--l4/notebooks/x.py": b"import os",
        }, links={"link--l4/results.json": "/etc/passwd"}),
        "gpu-runner-dup": make_zip({"ok--l4/results.json": results_json("ok--l4", 99.0)}),
        "gpu-runner-garbage": b"this is not a zip file",
    })
    out = tmp_path / "deep" / "baseline"
    with pytest.raises(SystemExit) as e:
        main(["baseline", "fetch", "--out", str(out)])
    assert e.value.code == 0
    got = json.loads((out / "baseline.json").read_text())
    assert got["found"] and got["entries"] == ["ok--l4/results.json"]
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["deep/baseline/baseline.json", "deep/baseline/ok--l4/results.json", "event.json"]
    assert json.loads((out / "ok--l4/results.json").read_bytes())["notebooks"][0]["duration_s"] == 10.0  # first wins
    warnings = "\n".join(got["warnings"])
    for name in ("../escaped/results.json", "/abs/results.json", "link--l4/results.json", "C:/win/results.json"):
        assert name in warnings
    assert "artifact gpu-runner-evil: bomb--l4/results.json is over the 4096-byte limit" in warnings
    assert "artifact gpu-runner-evil: notjson--l4/results.json is not a results.json" in warnings
    assert "artifact gpu-runner-dup: ok--l4/results.json came in an earlier artifact too" in warnings
    assert "gpu-runner-garbage: not a readable zip file" in warnings


def test_the_artifact_size_limit_is_checked_before_downloading(gh, monkeypatch, tmp_path):
    event(monkeypatch, tmp_path, "pull_request", PR)
    gh.add_run(artifacts={"gpu-runner-a--l4": entry_artifact("a--l4") + b"\0" * (2 * 2**20)})
    got = base.fetch(tmp_path / "b", max_artifact_bytes=2**20)
    assert not got.found and gh.calls["artifacts.download"] == 0
    assert "over the 1048576-byte limit" in got.artifacts[0].skipped


def test_github_errors_are_infrastructure_unless_optional(gh, monkeypatch, tmp_path, capsys):
    event(monkeypatch, tmp_path, "pull_request", PR)
    gh.add_run(artifacts={"gpu-runner-a--l4": entry_artifact("a--l4")})
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    with pytest.raises(SystemExit) as e:
        main(["baseline", "fetch", "--out", str(tmp_path / "b")])
    assert e.value.code == 3 and "401" in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "baseline.json").read_text())["reason"].startswith("GitHub API: 401")
    with pytest.raises(SystemExit) as e:
        main(["baseline", "fetch", "--out", str(tmp_path / "b"), "--optional"])
    assert e.value.code == 0 and "no baseline: GitHub API: 401" in capsys.readouterr().err


def test_a_busy_api_is_retried(gh, monkeypatch, tmp_path):
    event(monkeypatch, tmp_path, "pull_request", PR)
    gh.add_run(artifacts={"gpu-runner-a--l4": entry_artifact("a--l4")})
    gh.throttle = [(503, None), (429, 0)]
    assert base.fetch(tmp_path / "b").found


def test_the_out_folder_must_be_ours(gh, monkeypatch, tmp_path, capsys):
    event(monkeypatch, tmp_path, "pull_request", PR)
    mine = tmp_path / "precious"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(SystemExit) as e:
        main(["baseline", "fetch", "--out", str(mine)])
    assert e.value.code == 2 and (mine / "thesis.tex").exists()


def test_fetched_baseline_feeds_the_report(gh, monkeypatch, tmp_path):
    event(monkeypatch, tmp_path, "pull_request", PR)
    rid = gh.add_run(artifacts={"gpu-runner-a--l4": entry_artifact("a--l4", 10.0)})
    base.fetch(tmp_path / "baseline")
    now = tmp_path / "results" / "a--l4"
    now.mkdir(parents=True)
    (now / "results.json").write_bytes(results_json("a--l4", 30.0))
    r = gpu_runner("report", "results", "--baseline", "baseline", "--no-pdf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert f"Baseline: [run \\#{rid - 7000} on main (aaaaaaa)](https://github.com/{REPO}/actions/runs/{rid})" in summary
    assert "| <code>a--l4</code> | <code>nbs/a.ipynb</code> | wall time | 10.0 s | 30.0 s | ▲ +20.0 s (+200 %) |" \
        in summary
