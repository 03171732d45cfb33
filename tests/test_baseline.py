"""A run against a baseline, end to end: two real ``gpu-runner run --matrix`` runs of the same
runtime (the GPU played by the NVML stand-in), the second with one notebook made slower and
hungrier, one made to fail and one fixed, a notebook added and one removed; then
``gpu-runner report NOW --baseline BASE`` and what summary.md, junit.xml, index.html and
comparison.json say."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import gpu_runner, make_nb
from junitparser import JUnitXml
from standins.nvml import env as nvml_env
from standins.nvml import write_state

pytestmark = pytest.mark.slow

MATRIX = """\
version: 1
root: .
machines:
  here: {provider: local}
runtimes:
  rt:
    notebooks: [nbs]
    checks: []
    regression: {time_min: 0.5s}
"""
GPU = '''\
import json, os, time
def gpu(mib):
    path = os.environ["NVML_STANDIN_STATE"]
    with open(path) as f:
        state = json.load(f)
    state["used_mib"][0] = mib + 200
    state["procs"] = {str(os.getpid()): [0, mib]}
    with open(path + ".nb", "w") as f:
        json.dump(state, f)
    os.replace(path + ".nb", path)'''


def _notebooks(folder: Path, *, with_old: bool, with_new: bool) -> None:
    params = ("code", "sleep_s = 0.1\ngpu_mib = 1000\nfail = False\nbroken = False", ["parameters"])
    # each cell ends holding its memory, so the sample taken as it ends sees it for certain
    make_nb(folder, "train.ipynb", params, GPU, "gpu(gpu_mib)\ntime.sleep(sleep_s)", "gpu(0)")
    make_nb(folder, "steady.ipynb", params, GPU, "gpu(500)\ntime.sleep(0.1)")
    make_nb(folder, "flaky.ipynb", params, "if fail:\n    raise RuntimeError('flaky now')")
    make_nb(folder, "fixme.ipynb", params, "assert not broken, 'broken in the baseline'")
    for name, keep in (("old.ipynb", with_old), ("new.ipynb", with_new)):
        if keep:
            make_nb(folder, name, "print('hello')")
        else:
            (folder / name).unlink(missing_ok=True)


def _run(work: Path, out: str, *params: str) -> None:
    state = write_state(work / "nvml.json", used_mib=[200.0], util=[40])
    # one notebook at a time: they share the stand-in's one GPU, and each says what it holds
    r = gpu_runner("run", "--matrix", "matrix.yml", "--out", out, "--no-pdf", "-j", "1", *params, cwd=work,
                   env={**nvml_env(state), "GPU_RUNNER_SAMPLE_INTERVAL_S": "0.1"})
    assert r.returncode == 1, r.stdout + r.stderr  # each run has one failing notebook


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("baseline")
    (work / "matrix.yml").write_text(MATRIX)
    _notebooks(work / "nbs", with_old=True, with_new=False)
    _run(work, "base", "-p", "broken=True")
    _notebooks(work / "nbs", with_old=False, with_new=True)
    _run(work, "now", "-p", "fail=True", "-p", "sleep_s=1.5", "-p", "gpu_mib=3000")
    r = gpu_runner("report", "now", "--baseline", "base", "--no-pdf", cwd=work)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "against the baseline (base): 1 newly failing, 1 fixed, 2 regression(s), 0 improvement(s)" in r.stderr
    return work


def test_the_summary_says_newly_failing_first_then_fixed_then_the_regressions(compared):
    text = (compared / "now" / "summary.md").read_text()
    section = text[text.index("### Compared with the baseline"):text.index("### Failures")]
    assert "Baseline: base · 1 newly failing · 1 fixed · 2 regressions · 0 improvements" in section
    assert section.index("Newly failing") < section.index("Fixed") < section.index("Regressions")
    assert ("| <code>rt--here</code> | <code>nbs/flaky.ipynb</code> | passed | "
            "failed: cell 3, line 2: RuntimeError: flaky now |") in section
    assert "| <code>rt--here</code> | <code>nbs/fixme.ipynb</code> | failed | passed |" in section
    assert ("| <code>rt--here</code> | <code>nbs/train.ipynb</code> | GPU peak memory | 1,000 MiB | 3,000 MiB | "
            "▲ +2,000 MiB (+200 %) |") in section
    wall = re.search(r"\| <code>rt--here</code> \| <code>nbs/train.ipynb</code> \| wall time \| "
                     r"([\d.]+) s \| ([\d.]+) s \| ▲ \+([\d.]+) s \(\+([\d,]+) %\) \|", section)
    assert wall, section
    before, after = float(wall.group(1)), float(wall.group(2))
    assert after - before >= 1.0 and int(wall.group(4).replace(",", "")) > 20
    assert "steady.ipynb" not in section.split("**Not compared:**")[0]  # unchanged: not listed
    assert ("**Not compared:** rt--here · nbs/new.ipynb is not in the baseline; "
            "rt--here · nbs/old.ipynb was in the baseline but is not in this run.") in section
    assert "grew by more than time +20 % and 0.5 s, memory +10 % and 256 MiB" in section


def test_junit_says_the_same_per_notebook(compared):
    xml = JUnitXml.fromfile(str(compared / "now" / "junit.xml"))
    (suite,) = list(xml)
    assert {p.name: p.value for p in suite.properties()}["baseline"] == "base"
    props = {c.name: {p.get("name"): p.get("value") for p in c._elem.iter("property")} for c in suite}
    train = props["nbs/train.ipynb"]
    assert train["baseline_status"] == "passed" and train["baseline_change"] == "same"
    assert train["regressions"] == "duration_s,gpu_peak_memory_mib"
    assert train["baseline_gpu_peak_memory_mib"] == "1000" and train["gpu_peak_memory_change_mib"] == "2000"
    assert train["gpu_peak_memory_change_pct"] == "200" and float(train["duration_change_s"]) >= 1.0
    assert props["nbs/flaky.ipynb"]["baseline_change"] == "newly_failing"
    assert props["nbs/fixme.ipynb"]["baseline_change"] == "fixed"
    assert "regressions" not in props["nbs/steady.ipynb"] and props["nbs/steady.ipynb"]["baseline_change"] == "same"
    assert props["nbs/new.ipynb"]["baseline_status"] == "absent" and "baseline_change" not in props["nbs/new.ipynb"]
    # the entry's own junit.xml is this run alone
    (entry_suite,) = list(JUnitXml.fromfile(str(compared / "now" / "rt--here" / "junit.xml")))
    assert "baseline" not in {p.name for p in entry_suite.properties()}


def test_the_dashboard_shows_arrows_and_the_comparison_json_the_verdicts(compared):
    page = (compared / "now" / "index.html").read_text()
    section = re.search(r'<section class="baseline".*?</section>', page, re.S).group(0)
    assert "Newly failing" in section and "Fixed" in section and "Regressions" in section
    row = re.search(r'<tr class="s-passed"><th scope="row"><code>nbs/train.ipynb</code>.*?</tr>', page).group(0)
    assert '<span class="delta worse"' in row and "▲ +2,000 MiB (+200 %)" in row
    flaky = re.search(r'<tr class="s-failed"><th scope="row"><code>nbs/flaky.ipynb</code>.*?</tr>', page).group(0)
    assert "newly failing" in flaky
    comp = json.loads((compared / "now" / "comparison.json").read_text())
    assert comp["available"] and comp["counts"] == {"newly_failing": 1, "fixed": 1, "regressions": 2,
                                                     "improvements": 0}
    (entry,) = comp["entries"]
    assert entry["thresholds"] == {"time_percent": 20.0, "time_min": 0.5, "memory_percent": 10.0,
                                   "memory_min_mib": 256.0}


def test_a_baseline_without_results_is_said_once_and_the_report_goes_on(compared, tmp_path):
    now = tmp_path / "now"
    shutil.copytree(compared / "now", now)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = gpu_runner("report", str(now), "--baseline", str(empty), "--no-pdf", cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # the run's own failure, as without a baseline
    assert r.stderr.count("no baseline") == 1
    text = (now / "summary.md").read_text()
    assert text.count("No baseline to compare with") == 1 and "Compared with the baseline" not in text
    assert "### Failures" in text
    r = gpu_runner("report", str(now), "--baseline", str(tmp_path / "nope"), "--no-pdf", cwd=tmp_path)
    assert r.returncode == 2 and "--baseline" in r.stderr and "Traceback" not in r.stderr
