"""gpu-runner report --history: the marks of earlier runs (flaky, slower, more GPU memory) on this run's
notebooks, in summary.md, the dashboard and junit.xml; nothing changes without a history; a history that
cannot be used (it comes from other runs' artifacts, so it is untrusted) is one warning, and the report is
written all the same."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from junitparser import JUnitXml
from test_fetch import entry, nb, run_main

from gpu_runner.history import compute

HOSTILE = "nbs/<img src=x onerror=alert(1)> *b* [l](https://e.example) | @org/team.ipynb"
SHAS = ["1" * 40, "2" * 40, "3" * 40, "4" * 40, "5" * 40, "6" * 40]
FLAKY = ["passed", "failed", "passed", "passed", "failed", "passed"]
SLOW = [10.0, 10.0, 10.0, 16.0, 16.0, 16.0]


def history_doc() -> dict:
    """Six runs of rt--l4: HOSTILE passed and failed on the same commit (runs 1 and 2 share one),
    nbs/slow.ipynb went from 10 s to 16 s, nbs/steady.ipynb stayed as it was."""
    digests = []
    for i in range(6):
        notebooks = [{"path": HOSTILE, "status": FLAKY[i], "duration_s": 5.0, "gpu_peak_memory_mib": 100.0},
                     {"path": "nbs/slow.ipynb", "status": "passed", "duration_s": SLOW[i],
                      "gpu_peak_memory_mib": 1000.0},
                     {"path": "nbs/steady.ipynb", "status": "passed", "duration_s": 3.0,
                      "gpu_peak_memory_mib": 100.0}]
        digests.append({"run": {"id": 9000 + i, "run_number": i + 1, "head_sha": SHAS[min(i, 4) if i != 1 else 0],
                                "created_at": f"2025-03-0{i + 1}T00:00:00Z"},
                        "entries": [{"id": "rt--l4", "runtime": "rt", "machine": "l4", "status": "passed",
                                     "notebooks": notebooks}]})
    return compute(digests)


def results_dir(tmp_path: Path) -> Path:
    """This run: rt--l4 with the three notebooks, all passed."""
    out = tmp_path / "results"
    r = entry("l4", [nb(HOSTILE, "passed", 5.0), nb("nbs/slow.ipynb", "passed", 17.0),
                     nb("nbs/steady.ipynb", "passed", 3.0)])
    (out / r.entry.id).mkdir(parents=True)
    r.write(out / r.entry.id)
    return out


def report(tmp_path: Path, *extra: str, name: str = "out") -> Path:
    out = tmp_path / name
    assert run_main(["report", str(results_dir(tmp_path) if not (tmp_path / "results").exists()
                                   else tmp_path / "results"), "--out", str(out), "--no-pdf", *extra]) == 0
    return out


def write(tmp_path: Path, doc: object, name: str = "history.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_the_flaky_and_the_slower_notebook_are_marked_everywhere_and_escaped(tmp_path: Path, capsys) -> None:
    doc = history_doc()
    cells = {c["notebook"]: c for c in doc["cells"]}
    assert cells[f"rt: {HOSTILE}"]["marks"] == ["flaky"] and cells["rt: nbs/slow.ipynb"]["marks"] == ["slower"]
    cells[f"rt: {HOSTILE}"]["flaky_why"] = "<script>alert(1)</script> `x` @admins"  # the file is untrusted
    out = report(tmp_path, "--history", str(write(tmp_path, doc)))

    summary = (out / "summary.md").read_text()
    section = summary[summary.index("### ⚠️ Across the last 6 runs (2)"):]
    rows = [line for line in section.splitlines() if line.startswith("| <code>rt--l4</code>")][:2]
    assert "flaky: 2 of 6 runs failed (&lt;script&gt;alert(1)&lt;/script&gt; \\`x\\` @\u200dadmins)" in rows[0]
    assert r"<code>nbs/&lt;img src=x onerror=alert(1)&gt; \*b\* \[l\](https://e.example) \| @" in rows[0]
    assert "| <code>nbs/slow.ipynb</code> | slower: wall time +60% |" in rows[1]
    assert "steady" not in section.split("\n\n")[1]  # an unmarked notebook gets no row
    assert "⚠ slower: wall time +60%" in summary[summary.index("### Notebooks"):]  # and its notebook row
    assert "<script>" not in summary and "<img" not in summary and "@admins" not in summary

    page = (out / "index.html").read_text()
    grid = page[page.index('id="grid"'):page.index("</table>", page.index('id="grid"'))]
    assert "⚠ 1 flaky, 1 slower</span>" in grid and "Across the last runs: 1 flaky, 1 slower." in grid
    assert "⚠ flaky: 2 of 6 runs failed (&lt;script&gt;alert(1)&lt;/script&gt; `x` @admins)</span>" in page
    assert "⚠ slower: wall time +60%</span>" in page
    assert "<img src=x" not in page and "<script>alert" not in page

    suite = next(iter(JUnitXml.fromfile(str(out / "junit.xml"))))
    props = {c.name: {p.get("name"): p.get("value") for p in c._elem.iter("property")} for c in suite}
    assert props[HOSTILE]["history_flaky"] == "true" and props[HOSTILE]["history_marks"] == "flaky"
    assert props[HOSTILE]["history_runs"] == "6" and props[HOSTILE]["history_failed"] == "2"
    assert props["nbs/slow.ipynb"]["history_duration_trend_pct"] == "60"
    assert props["nbs/slow.ipynb"]["history_marks"] == "slower"
    assert not any(k.startswith("history_") for k in props["nbs/steady.ipynb"])
    assert "history of 6 earlier run(s): 2 notebook(s) of this run marked" in capsys.readouterr().err


def test_no_history_or_one_without_marks_for_this_run_changes_nothing(tmp_path: Path) -> None:
    plain = report(tmp_path, name="plain")
    other = history_doc()
    for c in other["cells"]:
        c["machine"] = "a100"  # the same notebooks, marked on another machine
    empty = {**history_doc(), "runs": [], "cells": [], "notebooks": [], "machines": []}
    for name, doc in (("other", other), ("empty", empty)):
        out = report(tmp_path, "--history", str(write(tmp_path, doc, f"{name}.json")), name=name)
        for f in ("summary.md", "junit.xml"):
            assert (out / f).read_text() == (plain / f).read_text(), (name, f)
        assert (out / "index.html").read_text().replace(f"/{name}/", "/plain/") == (plain / "index.html").read_text()


def _bad_docs() -> list[tuple[str, object]]:
    def cell(**change: object) -> dict:
        doc = history_doc()
        doc["cells"][0].update(change)
        return doc

    nan = json.dumps(history_doc()).replace('"time_trend": 1.0', '"time_trend": NaN', 1)
    assert "NaN" in nan
    return [
        ("not JSON", "{\"history_version\": 1,"),
        ("NaN", nan),
        ("not an object", [1, 2]),
        ("another version", {**history_doc(), "history_version": 2}),
        ("cells not a list", {**history_doc(), "cells": {"a": 1}}),
        ("notebook not a string", cell(notebook=["x"])),
        ("a huge notebook name", cell(notebook="x" * 5000)),
        ("an unknown mark", cell(marks=["flaky", "<b>haunted</b>"])),
        ("flaky without the mark", cell(flaky=True, marks=[])),
        ("a negative count", cell(failed=-1)),
        ("a count as true", cell(passed=True)),
        ("more outcomes than runs", cell(passed=100)),
        ("slower without a figure", cell(marks=["slower"], flaky=False, time_trend=None)),
        ("a trend of zero", cell(time_trend=0)),
        ("a point of no known status", cell(points=[{"status": "<img>"}])),
        ("a cell twice", {**history_doc(), "cells": history_doc()["cells"] * 2}),
    ]


@pytest.mark.parametrize("what,doc", _bad_docs(), ids=[w for w, _ in _bad_docs()])
def test_a_history_it_cannot_use_is_one_warning_and_the_report_is_written(tmp_path: Path, capsys, what: str,
                                                                         doc: object) -> None:
    out = report(tmp_path, "--history", str(write(tmp_path, doc)))
    err = [line for line in capsys.readouterr().err.splitlines() if "history not used" in line]
    assert len(err) == 1 and "the report goes on without flaky or trend marks" in err[0], what
    summary = (out / "summary.md").read_text()
    assert "Across the last" not in summary and "flaky" not in summary and "✅" in summary
    assert "history_" not in (out / "junit.xml").read_text()


def test_a_linked_or_missing_history_is_not_read(tmp_path: Path, capsys) -> None:
    real = write(tmp_path, history_doc(), "real.json")
    link = tmp_path / "history.json"
    os.symlink(real, link)
    out = report(tmp_path, "--history", str(link))
    assert "history not used" in capsys.readouterr().err and "Across the last" not in (out / "summary.md").read_text()
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    report(tmp_path, "--history", str(fifo), name="fifo")  # never blocks on a pipe
    assert "not a plain file" in capsys.readouterr().err
    report(tmp_path, "--history", str(tmp_path / "nope.json"), name="missing")
    assert "nope.json: no such file" in capsys.readouterr().err
