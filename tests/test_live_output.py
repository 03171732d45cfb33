"""A cell's output on the console while it runs, bounded, and never read as a workflow command."""

from __future__ import annotations

import queue
import subprocess
import threading
from pathlib import Path

import nbformat

from conftest import gpu_runner_command, local_env, make_nb, results
from gpu_runner.log import LIVE_BURST, LIVE_LINE_CHARS, LiveOutput


def _waiting_notebook(folder: Path, go: Path) -> Path:
    """A cell that prints a line, then waits for the test to create ``go`` (which it does only
    once it read the line on the console): a console that shows the output only when the cell
    ends never lets it go, and the cell times out."""
    return make_nb(folder, "wait.ipynb", (
        "import os, time, sys\n"
        "print('waiting for go')\n"
        "print('::warning::from the notebook')\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.05)\n"
        "print('went', file=sys.stderr)\n"))


def _run_until(args: list[str], cwd: Path, env: dict[str, str], seen: str, go: Path) -> tuple[int, list[str], bool]:
    """Run gpu-runner; create ``go`` when a console line ends with ``seen``. Returns the exit code,
    the console lines and whether ``seen`` was read while the cell still ran."""
    cmd, extra = gpu_runner_command()
    proc = subprocess.Popen([*cmd, *args], cwd=cwd, env={**local_env(env), **extra}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    got: list[str] = []
    before_end = False
    while True:
        line = lines.get(timeout=120)
        if line is None:
            break
        got.append(line)
        if line.endswith(seen) and not go.exists():
            before_end = not any("cell 1 " in g for g in got)  # the cell's result line is not there yet
            go.write_text("go")
    return proc.wait(timeout=60), got, before_end


def test_a_cells_output_is_on_the_console_before_the_cell_ends(tmp_path):
    go = tmp_path / "go"
    _waiting_notebook(tmp_path, go)
    rc, lines, before_end = _run_until(
        ["run", "wait.ipynb", "--out", "out", "--no-pdf", "--no-checks", "--cell-timeout", "60"],
        tmp_path, {}, "out| waiting for go", go)
    assert rc == 0, "\n".join(lines)
    assert before_end
    assert "[local: wait.ipynb] out| waiting for go" in lines
    assert "[local: wait.ipynb] err| went" in lines
    # the notebook keeps its output as it would without the console
    saved = nbformat.read(tmp_path / "out/local/notebooks/wait/output.ipynb", as_version=4)
    outs = saved.cells[0].outputs
    assert [(o.name, o.text) for o in outs] == [
        ("stdout", "waiting for go\n::warning::from the notebook\n"), ("stderr", "went\n")]
    assert results(tmp_path / "out")["notebooks"][0]["status"] == "passed"


def test_in_github_actions_the_output_is_in_the_notebooks_group_and_no_command(tmp_path):
    """GitHub runs a line that starts with ``::`` as a workflow command
    (https://docs.github.com/en/actions/reference/workflows-and-actions/workflow-commands):
    a notebook's own ``::warning::`` must reach the log as text."""
    go = tmp_path / "go"
    _waiting_notebook(tmp_path, go)
    env = {"GITHUB_ACTIONS": "true"}
    rc, lines, before_end = _run_until(
        ["run", "wait.ipynb", "--out", "out", "--no-pdf", "--no-checks", "--cell-timeout", "60", "-j", "1"],
        tmp_path, env, "out| waiting for go", go)
    assert rc == 0, "\n".join(lines)
    assert before_end
    start, end = lines.index("::group::local: wait.ipynb"), lines.index("::endgroup::")
    inside = lines[start:end]
    assert "[local: wait.ipynb] out| waiting for go" in inside
    assert "[local: wait.ipynb] out| ::warning::from the notebook" in inside
    assert not [line for line in lines if line.lstrip().startswith("::warning::")]


def test_live_output_is_bounded_in_line_length_rate_and_size():
    now = [0.0]
    live = LiveOutput(3000, clock=lambda: now[0])
    out = live.feed("stdout", "x" * (LIVE_LINE_CHARS + 50) + "\n")
    assert out == ["out| " + "x" * LIVE_LINE_CHARS + " … [50 more characters]"]
    # a burst past the rate: the rest is counted, said once the rate allows a line again
    out = live.feed("stdout", "".join(f"{i}\n" for i in range(LIVE_BURST + 10)))
    assert len(out) == LIVE_BURST - 1
    now[0] += 1.0
    out = live.feed("stdout", "after\n")
    assert out[0].startswith("… [11 line(s) not shown") and out[1] == "out| after"
    # past the size: one line says so, then nothing
    now[0] += 100.0
    out = live.feed("stderr", "y" * 900 + "\n" + "z" * 900 + "\n" + "w\n")
    assert out[-1].startswith("… [live output stops here")
    assert live.feed("stderr", "more\n") == []


def test_a_progress_bar_shows_its_state_now_and_then_and_partial_lines_at_the_cells_end():
    now = [0.0]
    live = LiveOutput(100_000, clock=lambda: now[0])
    assert live.feed("stdout", "\r 10%") == []  # nothing complete yet
    assert live.feed("stdout", "\r 20%") == ["out|  10%"]
    assert live.feed("stdout", "\r 30%") == []  # too soon for another state
    now[0] += 60
    assert live.feed("stdout", "\r 40%") == ["out|  30%"]
    assert live.feed("stdout", "\r100%\ndone") == ["out| 100%"]
    assert live.flush() == ["out| done"]
    assert LiveOutput(0).feed("stdout", "a\n") == []
