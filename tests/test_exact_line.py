"""Every report points at the line of the failing statement, not at the first line of its cell."""

from __future__ import annotations

import json

from junitparser import JUnitXml

from conftest import gpu_runner, make_nb, results
from gpu_runner.execute.notebook import cell_line_maps, line_in_cell


def test_the_traceback_names_the_line_of_the_cell_that_raised():
    # IPython 8+: "Cell In[N], line L" for each frame of a cell's code (the last one of the cell wins)
    tb = ("ValueError   Traceback (most recent call last)\nCell In[3], line 2\n      1 x = 1\n----> 2 f()\n"
          "Cell In[2], line 3, in f()\n----> 3     raise ValueError\nValueError: ")
    assert line_in_cell(tb, 3) == 2
    assert line_in_cell(tb, 2) == 3
    assert line_in_cell(tb, 7) is None
    # IPython 7: <ipython-input-N-hash> and the line marked with an arrow
    old = ("ZeroDivisionError   Traceback (most recent call last)\n<ipython-input-4-9e1622b385b6> in <module>\n"
           "      1 a = 1\n----> 2 1/0\n\nZeroDivisionError: division by zero")
    assert line_in_cell(old, 4) == 2
    assert line_in_cell("gpu-runner: the kernel died", 4) is None


def test_each_source_line_has_its_line_in_the_file():
    text = json.dumps({"cells": [{"cell_type": "code", "source": ["a = 1\n", "b = 2\n", "c"]},
                                 {"cell_type": "code", "source": "x\ny"}]}, indent=1)
    maps = cell_line_maps(text)
    lines = text.splitlines()
    assert [lines[n - 1].strip() for n in maps[0]] == ['"a = 1\\n",', '"b = 2\\n",', '"c"']
    assert maps[1] == [maps[1][0]] * 2 and '"x\\ny"' in lines[maps[1][0] - 1]


def test_junit_annotations_banner_and_summary_name_the_failing_statement(tmp_path):
    make_nb(tmp_path, "nbs/fails.ipynb",
            ("md", "# A title\n\nwith two lines"),
            ("code", "alpha = 1", ["parameters"]),
            "def check(x):\n    # a comment\n    if x > 0:\n        raise ValueError(f'x is {x}')\n",
            "y = 0\nz = 1\ncheck(alpha)\nprint('never')")
    summary, outputs = tmp_path / "step-summary.md", tmp_path / "outputs.txt"
    r = gpu_runner("run", "nbs", "--out", "out", "--no-pdf", "--no-checks", "--log", "py", "-p", "alpha=2",
                   cwd=tmp_path, env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
                                      "GITHUB_OUTPUT": str(outputs)})
    assert r.returncode == 1, r.stdout + r.stderr
    f = results(tmp_path / "out")["notebooks"][0]["failure"]
    # the failing cell's own statement: its line 3, the call (the function's frame is the cell that defines it)
    assert (f["cell_number"], f["cell_line"]) == (5, 3), f  # cell 5: the injected cell comes before it
    source = (tmp_path / "nbs/fails.ipynb").read_text().splitlines()
    assert source[f["source_line"] - 1].strip() == '"check(alpha)\\n",'
    log_py = (tmp_path / "out/local/notebooks/nbs/fails/log.py").read_text().splitlines()
    assert log_py[f["log_py_line"] - 1] == "check(alpha)"

    case = next(c for s in JUnitXml.fromfile(str(tmp_path / "out/junit.xml")) for c in s
                if c.name == "nbs/fails.ipynb")
    assert int(case._elem.get("line")) == f["source_line"]
    # the annotation: GitHub puts an ::error at file and line
    # (https://docs.github.com/en/actions/reference/workflows-and-actions/workflow-commands#setting-an-error-message)
    error = next(line for line in r.stdout.splitlines() if line.startswith("::error file=nbs/fails.ipynb"))
    assert f"line={f['source_line']}," in error
    assert "| 5, line 3 |" in summary.read_text()
    page = (tmp_path / "out/local/notebooks/nbs/fails/output.html").read_text()
    assert f"Go to cell 5, line 3</a>, where it failed (.ipynb line {f['source_line']}, " \
           f"log.py line {f['log_py_line']})" in page
