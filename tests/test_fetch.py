"""gpu-runner fetch through PyGithub against the GitHub stand-in: a run's artifacts downloaded into the
cache, checked, merged, and made into the dashboard the run's report job made; an interrupted fetch
going on where it stopped; hostile archives.

GitHub behaviour relied on (the stand-in models it):
* the artifacts of a run, each with ``size_in_bytes``, ``expired`` and ``digest`` ("The SHA256 digest of
  the artifact ... only populated on artifacts uploaded with upload-artifact v4 or newer"):
  https://docs.github.com/rest/actions/artifacts#list-workflow-run-artifacts
* downloading one answers a 302 to a short-lived storage address ("This URL expires after 1 minute.
  Look for Location: in the response header"), or 410 Gone once it expired:
  https://docs.github.com/rest/actions/artifacts#download-an-artifact
* actions/download-artifact with ``merge-multiple: false`` puts each artifact in a folder named after
  it (https://github.com/actions/download-artifact#download-all-artifacts): the report job's layout.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from conftest import make_zip
from standins.github import GitHubStandIn, github_standin

from gpu_runner.cli import main
from gpu_runner.github import fetch as f
from gpu_runner.report import artifact_layout
from gpu_runner.report.collect import collect
from gpu_runner.results import (
    EntryInfo,
    EntryResult,
    Failure,
    NotebookResult,
    TryRecord,
    find_entry_dirs,
    find_try_records,
)

REPO = "octo-org/runtime"
WF = "161335"


# -- building a run's artifacts ---------------------------------------------------------------------
def nb(path: str, status: str, duration: float, mem: float = 1000.0) -> NotebookResult:
    stem = path.removesuffix(".ipynb")
    fail = Failure(kind="error", message="boom", ename="RuntimeError", evalue="boom") if status == "failed" else None
    return NotebookResult(path=path, dir=f"notebooks/{stem}", status=status, duration_s=duration,  # type: ignore[arg-type]
                          gpu_peak_memory_mib=mem, failure=fail)


MACHINES = {"l4": 0, "a100": 1, "h100": 2}


def entry(machine: str, notebooks: list[NotebookResult], *, runtime: str = "rt", retry: int = 0) -> EntryResult:
    status = "failed" if any(n.status == "failed" for n in notebooks) else "passed"
    return EntryResult(entry=EntryInfo(id=f"{runtime}--{machine}", runtime=runtime, machine=machine,
                                       label=f"gpu-{runtime}-{machine}", provider="gce", ran_locally=False,
                                       matrix_position=[0, MACHINES[machine]], retry=retry),
                       status=status, started_at="2025-01-01T00:00:00Z", finished_at="2025-01-01T00:10:00Z",  # type: ignore[arg-type]
                       duration_s=sum(n.duration_s for n in notebooks), notebooks=notebooks)


def entry_zip(r: EntryResult) -> bytes:
    """What the run job uploads: the entry folder (results.json, each notebook's files)."""
    eid = r.entry.id
    members = {f"{eid}/results.json": json.dumps(r.to_dict()).encode()}
    for n in r.notebooks:
        members[f"{eid}/{n.dir}/metrics.json"] = b"{}"
    return make_zip(members)


def record_zip(rec: TryRecord) -> bytes:
    """What the stop job uploads: the try's record."""
    return make_zip({"gpu-runner-try.json": json.dumps(rec.to_dict()).encode()})


def no_capacity(eid: str) -> TryRecord:
    return TryRecord(entry_id=eid, label=f"gpu-{eid}", start="failure", run="skipped",
                     error="no capacity for g2-standard-4 in us-central1-a, us-central1-b")


def ran(eid: str) -> TryRecord:
    return TryRecord(entry_id=eid, label=f"gpu-{eid}", start="success", run="success")


def unzip_into(data: bytes, folder: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(folder)  # test data we made ourselves


def zip_folder(folder: Path) -> bytes:
    return make_zip({p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                     if p.is_file()})


def report_job(artifacts: dict[str, bytes], plan: list[dict], tmp: Path) -> Path:
    """The report job: each artifact in its own folder, `gpu-runner report --plan`; returns the folder."""
    job = tmp / "report-job"
    for name, data in artifacts.items():
        if name.startswith("gpu-runner-"):
            unzip_into(data, job / name)
    plan_path = tmp / "plan.json"
    plan_path.write_text(json.dumps({"include": plan}))
    with pytest.raises(SystemExit):
        main(["report", str(job), "--plan", str(plan_path), "--no-pdf"])
    assert (job / "index.html").is_file()
    return job


def model(folder: Path, plan: list[dict]) -> dict[str, tuple]:
    """Per entry what its dashboard shows: status, why not run, tries, each notebook's outcome."""
    dirs, recs, _ = artifact_layout(find_entry_dirs(folder), find_try_records(folder), roots=[folder], plan=plan)
    out = {}
    for d in collect(dirs, records=recs, plan=plan, artifacts=True).entries:
        r = d.result
        out[r.entry.id] = (r.status, r.reason, r.entry.retry, [(t.retry, t.outcome) for t in r.tries],
                           [(n.path, n.status, n.duration_s, n.gpu_peak_memory_mib) for n in r.notebooks],
                           len(d.earlier))
    return out


PLAN = [{"id": f"rt--{m}", "runtime": "rt", "machine": m, "label": f"gpu-rt-{m}", "provider": "gce"}
        for m in MACHINES]


@pytest.fixture
def gh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for s in github_standin(monkeypatch, REPO):
        monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
        monkeypatch.setenv(f.CACHE_ENV, str(tmp_path / "cache"))
        monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
        yield s


def run_main(args: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(args)
    return int(e.value.code or 0)


# -- tests ------------------------------------------------------------------------------------------------
def test_fetch_rebuilds_the_dashboard_the_report_job_made(gh: GitHubStandIn, tmp_path: Path, capsys) -> None:
    l4 = entry("l4", [nb("nbs/a.ipynb", "passed", 10.0), nb("nbs/b.ipynb", "passed", 20.0)])
    a100_first = entry("a100", [nb("nbs/a.ipynb", "passed", 3.0)])
    a100 = entry("a100", [nb("nbs/a.ipynb", "failed", 12.0), nb("nbs/b.ipynb", "passed", 21.0)], retry=1)
    preempted = TryRecord(entry_id="rt--a100", label="gpu-rt-a100", start="success", run="failure", preempted=True,
                          will_retry=True)
    artifacts = {"gpu-runner-rt--l4": entry_zip(l4), "gpu-runner-rt--l4.record": record_zip(ran("rt--l4")),
                 "gpu-runner-rt--a100": entry_zip(a100_first), "gpu-runner-rt--a100.record": record_zip(preempted),
                 "gpu-runner-rt--a100.retry-1": entry_zip(a100),
                 "gpu-runner-rt--a100.retry-1.record": record_zip(ran("rt--a100")),
                 "gpu-runner-rt--h100.record": record_zip(no_capacity("rt--h100"))}
    job = report_job(artifacts, PLAN, tmp_path)
    rid = gh.add_history_run(created_at="2025-02-01T10:00:00Z", duration_s=754, conclusion="failure")
    for name, data in artifacts.items():
        gh.add_artifact(rid, name, data)
    gh.add_artifact(rid, "gpu-runner-report", zip_folder(job))
    gh.add_artifact(rid, "gpu-runner-summary", make_zip({"summary.md": b"x"}))
    gh.add_artifact(rid, "coverage-html", make_zip({"index.html": b"<p>"}))  # not ours: left alone

    assert run_main(["fetch", f"https://github.com/{REPO}/actions/runs/{rid}"]) == 0
    out = capsys.readouterr()
    dashboard = Path(out.out.strip())
    assert dashboard == tmp_path / "cache" / "octo-org" / "runtime" / str(rid) / "1" / "results" / "index.html"
    assert dashboard.is_file() and "[7/7]" in out.err
    fetched = model(dashboard.parent, PLAN)
    assert fetched == model(job, PLAN)
    assert fetched["rt--h100"][0] == "not_run" and "no capacity" in fetched["rt--h100"][1]
    assert fetched["rt--a100"][:3] == ("failed", None, 1) and fetched["rt--a100"][5] == 1  # the preempted try beside
    # the same summary, word for word, as the report job's
    assert (dashboard.parent / "summary.md").read_text() == (job / "summary.md").read_text()
    # neither the merged report nor the summary was downloaded: the entries' own artifacts were enough
    assert gh.total_calls() and sum(gh.blob_downloads.values()) == 7 and gh.leaked_auth == [] and not gh.rejected
    digest = json.loads((dashboard.parent.parent / f.DIGEST_FILE).read_text())
    assert {e["id"]: e["status"] for e in digest["entries"]} == {"rt--l4": "passed", "rt--a100": "failed",
                                                                  "rt--h100": "not_run"}
    assert digest["run"]["duration_s"] == 754


def test_an_interrupted_fetch_goes_on_where_it_stopped(gh: GitHubStandIn, tmp_path: Path, capsys) -> None:
    """Completed artifacts are not downloaded again (same id, size and digest as the API lists);
    one that changed is."""
    rid = gh.add_history_run(created_at="2025-02-01T10:00:00Z")
    ids = [gh.add_artifact(rid, f"gpu-runner-rt--{m}", entry_zip(entry(m, [nb("nbs/a.ipynb", "passed", 5.0)])))
           for m in MACHINES]
    gh.blob_failures[ids[1]] = 3  # the storage host fails every try of the second one
    assert run_main(["fetch", str(rid)]) == 3
    assert "run the same command again" in capsys.readouterr().err
    assert gh.blob_downloads == {ids[0]: 1, ids[2]: 1}
    assert run_main(["fetch", str(rid)]) == 0
    assert gh.blob_downloads == {ids[0]: 1, ids[1]: 1, ids[2]: 1}  # only the missing one
    assert "2 artifact(s) of run" in capsys.readouterr().err
    assert run_main(["fetch", str(rid)]) == 0
    assert sum(gh.blob_downloads.values()) == 3  # nothing again
    changed = entry("h100", [nb("nbs/a.ipynb", "failed", 6.0)])
    gh.artifacts[ids[2]]["data"] = entry_zip(changed)  # its digest and size change
    assert run_main(["fetch", str(rid)]) == 0
    assert gh.blob_downloads[ids[2]] == 2 and sum(gh.blob_downloads.values()) == 4
    digest = json.loads((tmp_path / "cache" / "octo-org" / "runtime" / str(rid) / "1" / f.DIGEST_FILE).read_text())
    assert {e["id"]: e["status"] for e in digest["entries"]}["rt--h100"] == "failed"


def test_a_download_that_does_not_match_its_digest_is_not_kept(gh: GitHubStandIn, tmp_path: Path) -> None:
    rid = gh.add_history_run(created_at="2025-02-01T10:00:00Z")
    aid = gh.add_artifact(rid, "gpu-runner-rt--l4", entry_zip(entry("l4", [nb("nbs/a.ipynb", "passed", 5.0)])))
    real = gh._artifact_json

    def lying(a):
        out = real(a)
        if a["id"] == aid:
            out["digest"] = "sha256:" + "0" * 64
        return out

    gh._artifact_json = lying  # type: ignore[method-assign]
    assert run_main(["fetch", str(rid)]) == 3
    assert not (tmp_path / "cache" / "octo-org" / "runtime" / str(rid) / "1" / "results" / "gpu-runner-rt--l4").exists()


def test_hostile_archives_are_contained(gh: GitHubStandIn, tmp_path: Path, capsys) -> None:
    good = entry("l4", [nb("nbs/a.ipynb", "passed", 5.0)])
    hostile = make_zip({"rt--l4/results.json": json.dumps(good.to_dict()).encode(),
                        "../escaped.txt": b"x", "/abs.txt": b"x", "rt--l4/..\\win.txt": b"x",
                        "rt--l4/" + "d/" * 20 + "deep.txt": b"x", "rt--l4/ok.txt": b"fine"},
                       links={"rt--l4/link": "/etc/passwd"})
    bad_schema = entry("a100", [nb("nbs/a.ipynb", "passed", 5.0)]).to_dict()
    bad_schema["notebooks"][0]["status"] = "<script>alert(1)</script>"
    bomb = make_zip({"rt--h100/big.bin": b"\0" * 5_000_000,
                     "rt--h100/results.json": json.dumps(entry("h100", [nb("x.ipynb", "passed", 1.0)]).to_dict()).encode()})
    rid = gh.add_history_run(created_at="2025-02-01T10:00:00Z")
    gh.add_artifact(rid, "gpu-runner-rt--l4", hostile)
    gh.add_artifact(rid, "gpu-runner-rt--a100", make_zip({"rt--a100/results.json": json.dumps(bad_schema).encode()}))
    gh.add_artifact(rid, "gpu-runner-rt--h100", bomb)
    session = f.connect(REPO)
    got = f.fetch_run(session, rid, max_extract_bytes=1_000_000)
    results = got.results
    assert (results / "gpu-runner-rt--l4" / "rt--l4" / "ok.txt").read_bytes() == b"fine"
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink())
    assert not any(p.endswith(("escaped.txt", "abs.txt", "win.txt", "deep.txt")) or p.endswith("/link") for p in files)
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))
    assert got.artifacts["gpu-runner-rt--a100"]["state"] == "refused"
    assert "not a results.json this version can read" in got.artifacts["gpu-runner-rt--a100"]["reason"]
    assert got.artifacts["gpu-runner-rt--h100"]["state"] == "refused"
    assert "unpacks to more than" in got.artifacts["gpu-runner-rt--h100"]["reason"]
    assert not (results / "gpu-runner-rt--a100").exists() and not (results / "gpu-runner-rt--h100").exists()
    assert got.dashboard is not None and "<script>alert" not in got.dashboard.read_text()
    assert sum("left out" in w for w in got.warnings) >= 5
    # the command says so, and exits 2, after merging what it could
    assert run_main(["fetch", str(rid)]) == 2
    err = capsys.readouterr().err
    assert "2 artifact(s) refused" in err and "Traceback" not in err


@pytest.mark.parametrize("text,expected", [
    ("7001", f.RunRef(7001)),
    (f"https://github.com/{REPO}/actions/runs/7001", f.RunRef(7001, None, REPO)),
    (f"https://github.com/{REPO}/actions/runs/7001/attempts/2", f.RunRef(7001, 2, REPO)),
])
def test_a_run_is_an_id_or_its_address(text: str, expected: f.RunRef) -> None:
    assert f.parse_run_ref(text) == expected


@pytest.mark.parametrize("arg,message", [
    ("not-a-run", "is not a run id or a run's address"),
    ("https://github.com/other/repo/actions/runs/5", "the run's address is of other/repo"),
    ("https://github.com/octo-org/runtime/actions/runs/5/attempts/0", "attempts are numbered from 1"),
    ("99999", "run 99999: not found"),
])
def test_a_bad_run_is_one_line_and_exit_2(gh: GitHubStandIn, capsys, arg: str, message: str) -> None:
    assert run_main(["fetch", arg]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_no_token_is_a_usage_error(gh: GitHubStandIn, monkeypatch, capsys) -> None:
    monkeypatch.delenv("GITHUB_TOKEN")
    monkeypatch.setenv("PATH", "/nonexistent")  # no gh either
    assert run_main(["fetch", "7001"]) == 2
    assert "no GitHub token" in capsys.readouterr().err


def test_artifact_names_with_an_attempt_keep_the_latest_attempt() -> None:
    class A:
        def __init__(self, name: str, aid: int) -> None:
            self.name, self.id = name, aid

    arts = [A("gpu-runner-rt--l4.attempt-1", 1), A("gpu-runner-rt--l4.attempt-2", 2),
            A("gpu-runner-rt--l4.retry-1-attempt-2", 3), A("gpu-runner-rt--l4.record", 4),
            A("gpu-runner-something-odd.zip", 5), A("unrelated", 6), A("gpu-runner-report-attempt-3", 7)]
    notes: list[str] = []
    got = f.choose(arts, None, notes.append)
    assert {k: a.id for k, a in got.items()} == {"gpu-runner-rt--l4": 2, "gpu-runner-rt--l4.retry-1": 3,
                                                 "gpu-runner-rt--l4.record": 4, "gpu-runner-report": 7}
    assert any("gpu-runner-something-odd.zip" in n for n in notes)
    assert {k: a.id for k, a in f.choose(arts, 1, notes.append).items()}["gpu-runner-rt--l4"] == 1
