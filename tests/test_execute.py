"""`gpu-runner run` with real kernels: every failure kind, the layout, and the options.

Each test runs the real command line in a subprocess and checks what a user gets:
the exit code, results.json, and the executed notebook saved with its outputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from conftest import FIXTURE_NOTEBOOKS, by_path, gpu_runner, local_env, make_nb, results, saved
from gpu_runner.log import DEFAULT_LIVE_CHARS, LIVE_LINE_CHARS

pytestmark = pytest.mark.slow


def _outputs_text(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            parts.append(o["text"])
        elif o["output_type"] == "error":
            parts.append(o["ename"] + ": " + o["evalue"])
        elif "data" in o:
            parts.append(o["data"].get("text/plain", ""))
    return "".join(parts)


def test_fixture_notebooks_each_fail_with_their_kind_and_the_rest_pass(tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(FIXTURE_NOTEBOOKS, work / "nbs")
    r = gpu_runner("run", "nbs", "--cell-timeout", "2", "--out", "out", "--no-pdf", cwd=work)
    assert r.returncode == 1, r.stderr
    res = by_path(results(work / "out"))
    assert res["nbs/passes.ipynb"]["status"] == "passed"

    err = res["nbs/error.ipynb"]
    assert err["status"] == "failed"
    f = err["failure"]
    assert (f["kind"], f["cell_index"], f["ename"]) == ("error", 2, "ValueError")
    assert f["evalue"] == "the model diverged: loss=nan ✗"
    assert "\x1b[" not in f["traceback"] and "ValueError" in f["traceback"]
    nb = saved(work / "out", err)
    assert "before the error" in _outputs_text(nb.cells[1])
    assert "ValueError" in _outputs_text(nb.cells[2])
    assert nb.cells[3].outputs == [] and nb.cells[3].execution_count is None
    # the line in the .ipynb where the failing cell's source starts
    lines = (work / "nbs/error.ipynb").read_text().splitlines()
    assert "raise ValueError" in lines[f["source_line"] - 1]
    assert [c["status"] for c in err["cells"]] == ["passed", "failed", "not_run"]

    hang = res["nbs/hang.ipynb"]["failure"]
    assert (hang["kind"], hang["cell_index"]) == ("timeout", 0)
    assert "2 s cell timeout" in hang["message"] and "interrupted" in hang["message"]
    assert "time.sleep(600)" in hang["traceback"]  # the interrupt's traceback shows where it hung
    assert "about to hang" in _outputs_text(saved(work / "out", res["nbs/hang.ipynb"]).cells[0])

    killed = res["nbs/killed.ipynb"]["failure"]
    assert (killed["kind"], killed["cell_index"], killed["signal"]) == ("kernel_died", 1, "SIGKILL")
    assert "the kernel is about to be killed" in _outputs_text(saved(work / "out", res["nbs/killed.ipynb"]).cells[0])

    nk = res["nbs/no_kernel.ipynb"]["failure"]
    assert nk["kind"] == "setup_error" and "no-such-kernel" in nk["message"] and "python3" in nk["message"]

    bad = res["nbs/not_json.ipynb"]
    assert bad["failure"]["kind"] == "setup_error" and "not valid JSON" in bad["failure"]["message"]
    # nothing lost: the broken file is kept byte for byte
    assert (work / "out/local" / bad["files"]["ipynb"]).read_bytes() == (work / "nbs/not_json.ipynb").read_bytes()
    assert "Traceback" not in r.stderr


def test_layout_and_metrics(nbdir):
    make_nb(nbdir, "sub/deep/a.ipynb", "import os\nprint(os.getcwd())", "x = bytearray(30 * 2**20)")
    r = gpu_runner("run", "sub", "--out", "res", "--no-pdf", "--log", "py", cwd=nbdir)
    assert r.returncode == 0, r.stdout + r.stderr
    res = results(nbdir / "res")
    assert res["schema_version"] == 1 and res["entry"]["id"] == "local"
    nb = res["notebooks"][0]
    assert nb["path"] == "sub/deep/a.ipynb" and nb["status"] == "passed" and nb["failure"] is None
    folder = nbdir / "res/local/notebooks/sub/deep/a"
    for name in ("output.ipynb", "metrics.json", "params.json", "log.py"):
        assert (folder / name).is_file(), name
    assert (folder / "artifacts").is_dir()
    # the kernel's working directory is the notebook's folder
    assert str((nbdir / "sub/deep").resolve()) in _outputs_text(nbformat.read(folder / "output.ipynb", 4).cells[0])
    m = json.loads((folder / "metrics.json").read_text())
    assert m["wall_s"] >= 0 and len(m["cells"]) == 2 and all(c["duration_s"] is not None for c in m["cells"])
    assert m["peak_rss_mib"] > 30  # the kernel held a 30 MiB buffer
    assert m["gpu"] is None  # no GPU on this machine
    assert nb["peak_rss_mib"] == m["peak_rss_mib"]


def test_per_notebook_timeout_and_metadata_override(nbdir):
    slow = ["import time; time.sleep(0.8)"] * 6
    make_nb(nbdir, "cli_limit.ipynb", *slow)
    make_nb(nbdir, "own_limit.ipynb", *slow, execution={"timeout": 1})
    r = gpu_runner("run", "cli_limit.ipynb", "own_limit.ipynb", "--timeout", "2", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 1
    res = by_path(results(nbdir / "o"))
    a, b = res["cli_limit.ipynb"]["failure"], res["own_limit.ipynb"]["failure"]
    assert a["kind"] == "timeout" and "2 s limit" in a["message"] and a["cell_index"] >= 2
    assert b["kind"] == "timeout" and "1 s limit" in b["message"] and b["cell_index"] <= 1
    assert a["timeout_s"] == 2 and b["timeout_s"] == 1


def test_a_kernel_that_ignores_interrupts_is_killed_on_timeout(nbdir):
    make_nb(nbdir, "stubborn.ipynb",
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('spinning', flush=True)\n"
            "while True:\n    time.sleep(0.01)")
    r = gpu_runner("run", "stubborn.ipynb", "--cell-timeout", "1", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 1
    f = results(nbdir / "o")["notebooks"][0]["failure"]
    assert f["kind"] == "timeout" and "ignored the interrupt and was killed" in f["message"]
    assert "spinning" in _outputs_text(saved(nbdir / "o", results(nbdir / "o")["notebooks"][0]).cells[0])


def test_kernel_exit_code_is_recorded(nbdir):
    make_nb(nbdir, "exits.ipynb", "print('bye', flush=True)", "import os; os._exit(7)")
    r = gpu_runner("run", "exits.ipynb", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 1
    f = results(nbdir / "o")["notebooks"][0]["failure"]
    assert (f["kind"], f["cell_index"], f["exit_code"], f["signal"]) == ("kernel_died", 1, 7, None)
    assert "exited with code 7" in f["message"]


@pytest.mark.parametrize(
    ("source", "ename", "evalue"),
    [("raise SystemExit(3)", "SystemExit", "3"), ("raise KeyboardInterrupt", "KeyboardInterrupt", "")],
)
def test_systemexit_and_keyboardinterrupt_in_a_cell_are_errors(nbdir, source, ename, evalue):
    make_nb(nbdir, "nb.ipynb", "print('first')", source, "print('after')")
    r = gpu_runner("run", "nb.ipynb", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 1
    nb = results(nbdir / "o")["notebooks"][0]
    assert (nb["failure"]["kind"], nb["failure"]["cell_index"], nb["failure"]["ename"]) == ("error", 1, ename)
    assert nb["failure"]["evalue"] == evalue
    cells = saved(nbdir / "o", nb).cells
    assert "first" in _outputs_text(cells[0]) and cells[2].outputs == []


def test_non_ascii_output_and_errors_survive(nbdir):
    make_nb(nbdir, "ünïcode.ipynb", "print('héllo ✓ 日本語 🚀')", "raise RuntimeError('échec 🚫')")
    r = gpu_runner("run", "ünïcode.ipynb", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 1
    nb = results(nbdir / "o")["notebooks"][0]
    assert nb["path"] == "ünïcode.ipynb" and nb["failure"]["evalue"] == "échec 🚫"
    assert "日本語 🚀" in _outputs_text(saved(nbdir / "o", nb).cells[0])


def test_fifty_megabytes_of_output_are_kept_whole_beside_a_bounded_notebook(nbdir):
    make_nb(nbdir, "loud.ipynb", "import sys\nfor _ in range(50):\n    sys.stdout.write('z' * 1_000_000)\nprint('END')",
            "print('next cell runs')")
    r = gpu_runner("run", "loud.ipynb", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    nb = results(nbdir / "o")["notebooks"][0]
    folder = nbdir / "o/local" / nb["dir"]
    assert (folder / "output.ipynb").stat().st_size < 3_000_000
    whole = (folder / "outputs/cell-1-stdout.txt").read_text()
    assert len(whole) == 50_000_004 and whole.endswith("END\n")
    cells = saved(nbdir / "o", nb).cells
    assert "characters cut by gpu-runner" in cells[0].outputs[0]["text"]
    assert "next cell runs" in _outputs_text(cells[1])


BIG_OUTPUT_MB = int(os.environ.get("GPU_RUNNER_TEST_OUTPUT_MB", "1000"))
"""A cell's output for the bounded-memory test. 1 GB takes about 10 s here (2 GB: about 20 s, with
the same peak memory); the point is that memory stays flat however big it is."""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
def test_a_gigabyte_of_output_streams_through_bounded_memory_and_a_bounded_file(nbdir):
    n = BIG_OUTPUT_MB
    make_nb(nbdir, "flood.ipynb",
            f"import sys\nchunk = 'y' * 999_999 + '\\n'\nfor _ in range({n}):\n    sys.stdout.write(chunk)\n"
            "print('END')", "print('next cell runs')")
    env = local_env()
    proc = subprocess.Popen([sys.executable, "-m", "gpu_runner", "run", "flood.ipynb", "--out", "o", "--no-pdf",
                             "--no-checks"], cwd=nbdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    console: list[str] = []  # read as it comes, as a CI log is: the cell's output is shown live
    reader = threading.Thread(target=lambda: console.append(proc.stdout.read()), daemon=True)
    reader.start()
    peak_kib = 0  # gpu-runner's own high-water mark of resident memory (the kernel is another process)
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak_kib = max(peak_kib, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.05)
    reader.join(60)
    out = console[0]
    assert proc.returncode == 0, out[-3000:]
    assert len(out) < 2 * DEFAULT_LIVE_CHARS  # the console shows a bounded part of it
    assert "live output stops here" in out or n * LIVE_LINE_CHARS < DEFAULT_LIVE_CHARS
    peak_mib = peak_kib / 1024
    print(f"{n} MB of output: gpu-runner peak RSS {peak_mib:.0f} MiB")
    assert 0 < peak_mib < 300 and peak_mib < n / 3, f"peak RSS {peak_mib:.0f} MiB for {n} MB of output"
    nb = results(nbdir / "o")["notebooks"][0]
    folder = nbdir / "o/local" / nb["dir"]
    assert (folder / "output.ipynb").stat().st_size < 1_100_000  # the notebook keeps 1 MB of it
    spill = folder / "outputs/cell-1-stdout.txt"
    cap = 64_000_000  # GPU_RUNNER_SPILL_CAP's default: the first and the last 32 M characters
    assert spill.stat().st_size < cap + 1000
    with spill.open(encoding="utf-8") as f:
        assert f.read(10) == "y" * 10
        f.seek(cap // 2 - 10)
        middle = f.read(1000)
    dropped = n * 1_000_000 + 4 - cap
    assert f"[{dropped:,} characters dropped by gpu-runner: this file keeps the first 32,000,000 and the last " \
           f"32,000,000 of {n * 1_000_000 + 4:,}" in middle  # says how much was dropped, nothing lost unsaid
    assert spill.read_bytes()[-4:] == b"END\n"
    cells = saved(nbdir / "o", nb).cells
    text = cells[0].outputs[0]["text"]
    assert text.startswith("yyy") and text.endswith("END\n") and "characters cut by gpu-runner" in text
    assert "outputs/cell-1-stdout.txt keeps its first 32,000,000 and last 32,000,000 characters" in text
    assert "next cell runs" in _outputs_text(cells[1])
    assert "files" in nb and nb["files"]["outputs"] == [f"{nb['dir']}/outputs/cell-1-stdout.txt"]


def test_tags_skip_execution_and_raises_exception(nbdir):
    make_nb(nbdir, "tags.ipynb",
            ("code", "raise RuntimeError('skipped, never runs')", ["skip-execution"]),
            ("code", "1 / 0", ["raises-exception"]),
            "print('reached')")
    r = gpu_runner("run", "tags.ipynb", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 0, r.stdout
    nb = results(nbdir / "o")["notebooks"][0]
    assert [c["status"] for c in nb["cells"]] == ["skipped", "passed", "passed"]
    cells = saved(nbdir / "o", nb).cells
    assert cells[0].outputs == [] and "ZeroDivisionError" in _outputs_text(cells[1])


def test_parameters_are_injected_after_the_tagged_cell_typed_and_recorded(nbdir):
    make_nb(nbdir, "p.ipynb",
            "import json",
            ("code", "steps = 1\nname = 'default'\nflag = False\nrate = 0.5", ["parameters"]),
            "print(json.dumps({'steps': steps, 'name': name, 'flag': flag, 'rate': rate, 'types': "
            "[type(v).__name__ for v in (steps, name, flag, rate)]}))")
    r = gpu_runner("run", "p.ipynb", "-p", "steps=500", "-p", "name=resnet 50", "-p", "flag=true", "-p", "rate=1e-3",
                   "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 0, r.stdout + r.stderr
    nb = results(nbdir / "o")["notebooks"][0]
    cells = saved(nbdir / "o", nb).cells
    assert cells[2].metadata["tags"] == ["injected-parameters"]
    printed = json.loads(_outputs_text(cells[3]))
    assert printed == {"steps": 500, "name": "resnet 50", "flag": True, "rate": 0.001,
                       "types": ["int", "str", "bool", "float"]}
    params = json.loads((nbdir / "o/local" / nb["files"]["params"]).read_text())
    assert params == {"parameters": {"steps": 500, "name": "resnet 50", "flag": True, "rate": 0.001},
                      "injected_cell_index": 2}


def test_parameters_without_a_tagged_cell_go_on_top_and_failures_keep_original_lines(nbdir):
    path = make_nb(nbdir, "p.ipynb", "print(x)", "raise ValueError(x)")
    r = gpu_runner("run", "p.ipynb", "-p", "x=7", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 1
    f = results(nbdir / "o")["notebooks"][0]["failure"]
    assert f["cell_index"] == 2 and f["evalue"] == "7"  # index in the executed notebook
    assert "raise ValueError" in path.read_text().splitlines()[f["source_line"] - 1]  # line in the original


def test_rerun_catches_state_that_breaks_a_second_run(nbdir):
    make_nb(nbdir, "once.ipynb", "assert 'loaded' not in globals(), 'model already loaded'\nloaded = True")
    make_nb(nbdir, "twice.ipynb", "x = 1\nprint(x)")
    r = gpu_runner("run", "once.ipynb", "twice.ipynb", "--rerun", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 1
    res = by_path(results(nbdir / "o"))
    once = res["once.ipynb"]
    assert once["failure"]["kind"] == "rerun_error" and once["failure"]["ename"] == "AssertionError"
    assert once["rerun"]["status"] == "failed"
    assert "second run" in once["failure"]["message"]
    folder = nbdir / "o/local" / once["dir"]
    assert "AssertionError" in _outputs_text(nbformat.read(folder / "output.ipynb", 4).cells[0])
    assert _outputs_text(nbformat.read(folder / "first-run.ipynb", 4).cells[0]) == ""
    assert res["twice.ipynb"]["status"] == "passed" and res["twice.ipynb"]["rerun"]["status"] == "passed"


def test_skiptest_skips_and_a_gpu_notebook_is_skipped_here_with_its_reason(nbdir):
    make_nb(nbdir, "skip.ipynb", "import unittest\nraise unittest.SkipTest('needs 2 GPUs')", "print('no')")
    make_nb(nbdir, "gpu.ipynb", "import torch", gpu_runner={"requires_gpu": True})
    r = gpu_runner("run", ".", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 0, r.stdout
    res = by_path(results(nbdir / "o"))
    assert res["skip.ipynb"]["status"] == "skipped" and res["skip.ipynb"]["skip_reason"] == "needs 2 GPUs"
    assert res["gpu.ipynb"]["status"] == "skipped" and "no NVIDIA GPU" in res["gpu.ipynb"]["skip_reason"]


def test_artifacts_written_by_the_notebook_are_kept(nbdir):
    make_nb(nbdir, "a.ipynb", "import os, pathlib\np = pathlib.Path(os.environ['GPU_RUNNER_ARTIFACTS_DIR'])\n"
                              "(p / 'plots').mkdir()\n(p / 'plots' / 'loss.csv').write_text('1,0.5\\n')")
    r = gpu_runner("run", "a.ipynb", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 0, r.stdout
    nb = results(nbdir / "o")["notebooks"][0]
    assert nb["files"]["artifacts"] == ["notebooks/a/artifacts/plots/loss.csv"]
    assert (nbdir / "o/local/notebooks/a/artifacts/plots/loss.csv").read_text() == "1,0.5\n"


def test_log_py_is_percent_format_with_outputs_as_comments_and_printed_in_a_github_group(nbdir):
    make_nb(nbdir, "l.ipynb", ("md", "# Title"), "print('hello log')")
    r = gpu_runner("run", "l.ipynb", "--out", "o", "--log", "py", "--no-pdf", "--no-checks", "-j", "1", cwd=nbdir,
                   env={"GITHUB_ACTIONS": "true"})  # the checks' own groups: tests/test_checks_cli.py
    assert r.returncode == 0, r.stdout
    log = (nbdir / "o/local/notebooks/l/log.py").read_text()
    assert "# %% [markdown]" in log and "print('hello log')" in log and "# hello log" in log
    out = r.stdout
    start = out.index("::group::local: l.ipynb")
    end = out.index("::endgroup::", start)
    assert start < out.index("cell 2 ok") < out.index("# hello log") < end  # cell 2: after the markdown one
    assert end < out.index("[PASSED] local: l.ipynb")


def test_github_groups_do_not_interleave_with_parallel_notebooks(nbdir):
    for i in range(3):
        make_nb(nbdir, f"n{i}.ipynb", "import time; time.sleep(0.3)", f"print({i})")
    r = gpu_runner("run", ".", "--out", "o", "-j", "3", "--no-pdf", cwd=nbdir, env={"GITHUB_ACTIONS": "true"})
    assert r.returncode == 0
    assert r.stdout.index("check resources") < r.stdout.index("[start] local: n0.ipynb")  # checks before notebooks
    depth = 0
    for line in r.stdout.splitlines():
        if line.startswith("::group::"):
            assert depth == 0, "nested or interleaved group"
            depth += 1
        elif line == "::endgroup::":
            depth -= 1
    assert depth == 0 and r.stdout.count("::group::local: n") == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.ipynb"], "no such file or folder: missing.ipynb"),
        (["run", "*.nothing"], "no notebooks"),
        (["run", "x.ipynb", "-p", "not an assignment"], "NAME=VALUE"),
        (["run", "x.ipynb", "--jobs", "0"], "--jobs"),
        (["run", "x.ipynb", "--runtime", "pytorch"], "give --matrix FILE too"),
    ],
)
def test_usage_errors_exit_2_with_a_message_and_no_traceback(nbdir, args, message):
    make_nb(nbdir, "x.ipynb", "1")
    r = gpu_runner(*args, cwd=nbdir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_refuses_to_clear_a_folder_that_is_not_ours(nbdir):
    make_nb(nbdir, "x.ipynb", "1")
    (nbdir / "o/local").mkdir(parents=True)
    (nbdir / "o/local/thesis.tex").write_text("precious")
    r = gpu_runner("run", "x.ipynb", "--out", "o", "--no-pdf", cwd=nbdir)
    assert r.returncode == 2 and "holds no gpu-runner results" in r.stderr
    assert (nbdir / "o/local/thesis.tex").read_text() == "precious"


def test_notebook_paths_outside_the_working_directory_are_named_from_the_folder_given(tmp_path):
    make_nb(tmp_path / "elsewhere", "nbs/z.ipynb", "1")
    (tmp_path / "here").mkdir()
    r = gpu_runner("run", str(tmp_path / "elsewhere"), "--out", "o", "--no-pdf", cwd=tmp_path / "here")
    assert r.returncode == 0
    nb = results(tmp_path / "here/o")["notebooks"][0]
    assert nb["path"] == "nbs/z.ipynb" and re.fullmatch(r"notebooks/nbs/z", nb["dir"])


@pytest.mark.parametrize("forkserver", ["1", "0"])
def test_every_notebook_gets_a_fresh_kernel_in_its_folder_with_its_environment(nbdir, forkserver):
    """Kernels forked from the fork server (or started from scratch with GPU_RUNNER_FORKSERVER=0)
    are fresh processes: nothing one notebook did is seen by the next, sys.path starts with the
    notebook's folder, and gpu-runner's own modules never shadow a notebook's imports. What the
    fork server imports ahead for its kernels (pdb's ``code``) is what a kernel started from
    scratch imports as it starts, before its folder is on sys.path: the standard library's."""
    (nbdir / "b").mkdir()
    (nbdir / "b/metrics.py").write_text("WHO = 'the notebook folder'\n")  # same name as a gpu-runner module
    (nbdir / "b/code.py").write_text("WHO = 'the notebook folder'\n")  # same name as a module pdb imports
    probe = ("import json, os, sys\nimport metrics, code\n"
             "print(json.dumps({'marked': hasattr(json, 'marked'), 'pid': os.getpid(), 'cwd': os.getcwd(),\n"
             "                  'code': getattr(code, 'WHO', 'the standard library'),\n"
             "                  'ours_on_path': [p for p in sys.path if 'gpu_runner' in p], 'metrics': metrics.WHO,\n"
             "                  'artifacts': os.environ['GPU_RUNNER_ARTIFACTS_DIR'], 'extra': os.environ.get('EXTRA')}))\n"
             "json.marked = True")
    for name in ("one", "two", "three"):
        make_nb(nbdir, f"b/{name}.ipynb", probe)
    r = gpu_runner("run", "b", "--out", "o", "--no-pdf", "--no-checks", "-j", "1", cwd=nbdir,
                   env={"GPU_RUNNER_FORKSERVER": forkserver, "EXTRA": "from the caller"})
    assert r.returncode == 0, r.stdout[-3000:]
    seen = [json.loads(_outputs_text(saved(nbdir / "o", n).cells[0])) for n in results(nbdir / "o")["notebooks"]]
    assert [s["marked"] for s in seen] == [False, False, False]
    assert len({s["pid"] for s in seen}) == 3
    folder = str((nbdir / "b").resolve())
    assert all(s["cwd"] == folder and s["metrics"] == "the notebook folder" and not s["ours_on_path"] for s in seen)
    assert all(s["code"] == "the standard library" for s in seen)
    assert len({s["artifacts"] for s in seen}) == 3 and all(s["extra"] == "from the caller" for s in seen)


def test_a_quiet_kernel_leaves_no_kernel_log(nbdir):
    make_nb(nbdir, "quiet.ipynb", "x = 1")
    make_nb(nbdir, "loud.ipynb", "import os\nos.write(2, b'C-level complaint\\n')")
    r = gpu_runner("run", ".", "--out", "o", "--no-pdf", "--no-checks", cwd=nbdir)
    assert r.returncode == 0, r.stdout
    assert not (nbdir / "o/local/notebooks/quiet/kernel.log").exists()
    res = by_path(results(nbdir / "o"))
    assert "kernel_log" not in res["quiet.ipynb"]["files"]
    assert "C-level complaint" in (nbdir / "o/local" / res["loud.ipynb"]["files"]["kernel_log"]).read_text()


def test_one_cell_numbering_the_entry_named_and_the_traceback_on_the_console(nbdir):
    """Cell N is the cell's position among all the notebook's cells, from 1, everywhere people read
    it (log lines, results.json's cell_number, metrics.json, the summary, the HTML anchor); console
    lines name the entry; a failure shows the end of its traceback on the console."""
    make_nb(nbdir, "notebooks/sub/nb.ipynb", ("md", "# Title"), "print('one')",
            "def inner():\n    raise ValueError('boom')\n\ninner()")
    r = gpu_runner("run", "notebooks", "--out", "o", "--no-pdf", "--no-checks", cwd=nbdir)
    assert r.returncode == 1
    nb = results(nbdir / "o")["notebooks"][0]
    assert results(nbdir / "o")["cell_numbering"].startswith("cell_index: the 0-based position")
    f = nb["failure"]
    assert (f["cell_index"], f["cell_number"]) == (2, 3)
    assert [(c["index"], c["number"], c["status"]) for c in nb["cells"]] == [(1, 2, "passed"), (2, 3, "failed")]
    metrics = json.loads((nbdir / "o/local" / nb["files"]["metrics"]).read_text())
    assert [c["number"] for c in metrics["cells"]] == [2, 3]
    out = r.stdout
    assert "[local: notebooks/sub/nb.ipynb] cell 2 ok in " in out and "(code cell 1/2, " in out
    assert "[local: notebooks/sub/nb.ipynb] cell 3 failed in " in out and "(code cell 2/2, " in out
    assert "[FAILED] local: notebooks/sub/nb.ipynb in " in out and ": cell 3, line 2: ValueError: boom" in out
    result_at = out.index("[FAILED] local: notebooks/sub/nb.ipynb")
    shown = out[result_at:]
    assert "inner()" in shown and "raise ValueError('boom')" in shown  # the last frames, not just the error
    assert "    ValueError: boom" in shown
    summary = (nbdir / "o/summary.md").read_text()
    assert "| <code>local</code> | <code>notebooks/sub/nb.ipynb</code> | 3, line 2 | error |" in summary
    assert "**1 notebook: 1 failed** · no system checks" in summary
    assert "reports: 1 notebook: 0 passed, 1 failed; no system checks; on 1 entry" in out
    # the output folder does not stutter: notebooks/sub/nb, not notebooks/notebooks/sub/nb
    assert nb["dir"] == "notebooks/sub/nb" and (nbdir / "o/local/notebooks/sub/nb/output.ipynb").is_file()
    assert 'id="cell-3"' in (nbdir / "o/local/notebooks/sub/nb/output.html").read_text()


class _Channel:
    """A channel of a kernel client that hands out scripted messages (None: nothing comes)."""

    def __init__(self) -> None:
        self.script: list = []

    async def get_msg(self, timeout=None):
        from queue import Empty

        item = self.script.pop(0) if self.script else None
        if item is None:
            raise Empty
        return item


class _Client:
    """The part of jupyter_client's kernel client that ``kernel_ready`` uses, scripted: the
    first kernel_info's IOPub messages are lost (a subscriber that joined late), the second's arrive."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.shell, self.iopub = _Channel(), _Channel()
        self.shell_channel, self.iopub_channel = self.shell, self.iopub
        self.handled = None

    def kernel_info(self) -> str:
        msg_id = f"req-{len(self.asked) + 1}"
        self.asked.append(msg_id)
        reply = {"msg_type": "kernel_info_reply", "parent_header": {"msg_id": msg_id}, "content": {}}
        if msg_id == "req-1":
            self.shell.script += [reply]
            self.iopub.script += [None]  # lost
        else:  # a stale reply to another request first: skipped
            self.shell.script += [{"msg_type": "kernel_info_reply", "parent_header": {"msg_id": "old"}}, reply]
            self.iopub.script += [{"msg_type": "status", "parent_header": {"msg_id": msg_id},
                                   "content": {"execution_state": "busy"}}]
        return msg_id

    def _handle_kernel_info_reply(self, msg) -> None:
        self.handled = msg


def test_kernel_ready_asks_again_until_iopub_is_proven_and_waits_for_nothing_more():
    import asyncio

    from gpu_runner.execute.kernels import kernel_ready

    kc = _Client()
    asyncio.run(kernel_ready(kc, timeout=30))
    assert kc.asked == ["req-1", "req-2"]
    assert kc.handled["parent_header"]["msg_id"] == "req-2"
    assert kc.shell.script == [] and kc.iopub.script == []  # nothing read after the proof


def test_kernel_ready_gives_up_after_its_timeout():
    import asyncio

    from gpu_runner.execute.kernels import kernel_ready

    class Silent(_Client):
        def kernel_info(self) -> str:
            self.asked.append("x")
            return "x"

    kc = Silent()
    with pytest.raises(RuntimeError, match="did not answer in 0.3 s"):
        asyncio.run(kernel_ready(kc, timeout=0.3))
    assert kc.asked and kc.handled is None


def test_a_notebook_is_read_when_a_kernel_slot_frees_up_for_it_not_at_the_start(nbdir):
    """At most 2 x jobs notebooks are read (and held in memory) at once: with one job, the third
    notebook is read only once one of the first two has ended, so what that one wrote into it is what
    runs (both write it: which of the two gets the execution slot first is whichever kernel is ready
    first)."""
    import nbformat as nbf

    third = make_nb(nbdir, "c.ipynb", "print('as it was at the start')")
    rewritten = nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell("print('as the first notebook left it')")])
    rewritten.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "python3"}
    make_nb(nbdir, "a.ipynb", f"open({str(third)!r}, 'w').write({nbf.writes(rewritten)!r})")
    make_nb(nbdir, "b.ipynb", f"open({str(third)!r}, 'w').write({nbf.writes(rewritten)!r})")
    r = gpu_runner("run", ".", "--out", "o", "--no-pdf", "--no-checks", "-j", "1", cwd=nbdir)
    assert r.returncode == 0, r.stdout[-3000:]
    res = by_path(results(nbdir / "o"))
    assert "as the first notebook left it" in _outputs_text(saved(nbdir / "o", res["c.ipynb"]).cells[0])
