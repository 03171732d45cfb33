"""Entry folders for the report tests, built with the real result model and real notebooks.

``build_run(root)`` writes three entries the way the engine leaves them (results.json,
notebooks/<path>/output.ipynb) covering every outcome: passing, erroring (a real
traceback from a real kernel when ``execute=True``), timing-out, kernel-killed, skipped,
a setup error with a broken .ipynb, a passing and a failing system check.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gpu_runner.results import (
    CellResult,
    CheckResult,
    EntryInfo,
    EntryResult,
    Failure,
    NotebookResult,
)

ANSI_TB = [
    "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
    "\x1b[0;31mZeroDivisionError\x1b[0m                         Traceback (most recent call last)",
    "Cell \x1b[0;32mIn[3], line 2\x1b[0m\n\x1b[1;32m      1\x1b[0m x \x1b[38;5;241m=\x1b[39m \x1b[38;5;241m1\x1b[39m\n"
    "\x1b[0;32m----> 2\x1b[0m \x1b[43mx\x1b[49m\x1b[43m \x1b[49m\x1b[38;5;241;43m/\x1b[39;49m\x1b[43m \x1b[49m\x1b[38;5;241;43m0\x1b[39;49m",
    "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
]


def source_lines(ipynb_text: str) -> list[int]:
    """1-based line of each cell's "source" key in the file (how the engine reports it)."""
    lines = []
    depth_cells = False
    for i, line in enumerate(ipynb_text.splitlines(), start=1):
        if line.strip().startswith('"cells"'):
            depth_cells = True
        if depth_cells and line.lstrip().startswith('"source"') and line.startswith(' ' * 3) and not line.startswith(' ' * 4):
            lines.append(i)
    return lines


def _write_nb(entry_dir: Path, nb_dir: str, nb) -> tuple[str, list[int]]:
    folder = entry_dir / nb_dir
    folder.mkdir(parents=True, exist_ok=True)
    text = nbformat.writes(nb)
    (folder / "output.ipynb").write_text(text, encoding="utf-8")
    return f"{nb_dir}/output.ipynb", source_lines(text)


def _files(ipynb: str) -> dict:
    return {"ipynb": ipynb}


def passing_nb():
    return new_notebook(cells=[
        new_markdown_cell("# Smoke test\nChecks that `torch` sees the GPU: $E = mc^2$."),
        new_code_cell("import math\nprint('hello from the GPU runner')", execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="hello from the GPU runner\n")]),
        new_code_cell("math.pi", execution_count=2,
                      outputs=[new_output("execute_result", data={"text/plain": "3.141592653589793"}, execution_count=2)]),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def erroring_nb(execute: bool):
    nb = new_notebook(cells=[
        new_markdown_cell("# Division"),
        new_code_cell("import os\nprint('start')"),
        new_code_cell("x = 1\nx / 0"),
        new_code_cell("print('never')"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    if execute:
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError

        client = NotebookClient(nb, timeout=60, kernel_name="python3")
        try:
            client.execute()
        except CellExecutionError:
            pass
        return nb
    nb.cells[1].outputs = [new_output("stream", name="stdout", text="start\n")]
    nb.cells[1].execution_count = 1
    nb.cells[2].outputs = [new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=ANSI_TB)]
    nb.cells[2].execution_count = 2
    return nb


def long_nb():
    return new_notebook(cells=[
        new_code_cell("import time\nfor i in range(3):\n    print(i)\n    time.sleep(1)", execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="0\n1\n")]),
        new_code_cell("time.sleep(10_000)"),
    ])


def build_entry(root: Path, entry_id: str, *, runtime=None, machine=None, provider="gce", ran_locally=False,
                kinds=("pass", "error", "timeout", "kernel_died", "skip"), checks=("ok", "fail"),
                execute=False, facts=None, matrix_position=None) -> Path:
    entry_dir = root / entry_id
    entry_dir.mkdir(parents=True, exist_ok=True)
    notebooks: list[NotebookResult] = []
    for kind in kinds:
        if kind == "pass":
            path = "notebooks/smoke.ipynb"
            ipynb, _ = _write_nb(entry_dir, "notebooks/smoke", passing_nb())
            notebooks.append(NotebookResult(path=path, dir="notebooks/smoke", status="passed", duration_s=2.5,
                                            kernel="python3", gpu_peak_memory_mib=1536.0, files=_files(ipynb),
                                            cells=[CellResult(1, "passed", 0.1, 1), CellResult(2, "passed", 0.1, 2)]))
        elif kind == "error":
            path = "notebooks/divide.ipynb"
            nb = erroring_nb(execute)
            ipynb, lines = _write_nb(entry_dir, "notebooks/divide", nb)
            err = next(o for o in nb.cells[2].outputs if o.output_type == "error")
            notebooks.append(NotebookResult(
                path=path, dir="notebooks/divide", status="failed", duration_s=1.25, kernel="python3",
                gpu_peak_memory_mib=None, files=_files(ipynb),
                failure=Failure(kind="error", message="ZeroDivisionError: division by zero", cell_index=2,
                                source_line=lines[2], ename=err.ename, evalue=err.evalue,
                                traceback="\n".join(err.traceback), output_tail="start\n\x1b[31mred\x1b[0m tail\x07\n"),
            ))
        elif kind == "timeout":
            path = "notebooks/train long.ipynb"
            ipynb, lines = _write_nb(entry_dir, "notebooks/train long", long_nb())
            notebooks.append(NotebookResult(
                path=path, dir="notebooks/train long", status="failed", duration_s=30.0, files=_files(ipynb),
                failure=Failure(kind="timeout", message="cell 2 ran past the per-cell limit of 30 s", cell_index=1,
                                source_line=lines[1], timeout_s=30.0, output_tail="0\n1\n"),
            ))
        elif kind == "kernel_died":
            path = "notebooks/oom.ipynb"
            ipynb, lines = _write_nb(entry_dir, "notebooks/oom", long_nb())
            notebooks.append(NotebookResult(
                path=path, dir="notebooks/oom", status="failed", duration_s=4.0, files=_files(ipynb),
                gpu_peak_memory_mib=79_000.0,
                failure=Failure(kind="kernel_died", message="the kernel died while running cell 2", cell_index=1,
                                source_line=lines[1], signal="SIGKILL", exit_code=-9,
                                output_tail="allocating 80 GiB\n"),
            ))
        elif kind == "skip":
            notebooks.append(NotebookResult(path="notebooks/multi_gpu.ipynb", dir="notebooks/multi_gpu",
                                            status="skipped", duration_s=0.0, skip_reason="needs 2 GPUs, found 1"))
        elif kind == "broken":
            folder = entry_dir / "notebooks/broken"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "output.ipynb").write_text('{"cells": [ this is not json', encoding="utf-8")
            notebooks.append(NotebookResult(
                path="notebooks/broken.ipynb", dir="notebooks/broken", status="failed", duration_s=0.01,
                files={"ipynb": "notebooks/broken/output.ipynb"},
                failure=Failure(kind="setup_error", message="notebooks/broken.ipynb is not valid JSON: line 1 column 13"),
            ))
        elif kind == "absent":
            notebooks.append(NotebookResult(
                path="notebooks/gone.ipynb", dir="notebooks/gone", status="failed", duration_s=0.0,
                failure=Failure(kind="setup_error", message="notebooks/gone.ipynb could not be read"),
            ))
    check_results = []
    for c in checks:
        if c == "ok":
            check_results.append(CheckResult(name="gpu", status="passed", duration_s=0.4,
                                             summary="1× NVIDIA A100-SXM4-80GB, driver 550.54.15"))
        elif c == "fail":
            check_results.append(CheckResult(name="cuda", status="failed", duration_s=0.2, summary="torch.cuda.is_available() is False",
                                             failure=Failure(kind="check_failed", message="torch.cuda.is_available() returned False",
                                                             output_tail="CUDA driver version is insufficient\n")))
        elif c == "skip":
            check_results.append(CheckResult(name="nccl", status="skipped", duration_s=0.0, skip_reason="one GPU"))
    status = "failed" if any(x.status == "failed" for x in [*notebooks, *check_results]) else "passed"
    result = EntryResult(
        entry=EntryInfo(id=entry_id, runtime=runtime, machine=machine, provider=provider, ran_locally=ran_locally,
                        label=f"gpu-runner-1-1-{entry_id}" if provider != "local" else None,
                        matrix_position=matrix_position),
        status=status, started_at="2025-01-02T03:04:05+00:00", finished_at="2025-01-02T03:05:05+00:00",
        duration_s=60.0, notebooks=notebooks, checks=check_results,
        facts=facts if facts is not None else {"gpu_model": "NVIDIA A100-SXM4-80GB", "gpu_count": 1,
                                               "driver_version": "550.54.15", "cuda_version": "12.4", "hostname": "vm-1"},
        tool_version="0.1.0",
    )
    result.write(entry_dir)
    return entry_dir


def build_run(root: Path, *, execute: bool = False) -> list[Path]:
    """Three entries of a 2 runtimes x 2 machines matrix (one combination absent). The matrix
    names runtimes pytorch, jax and machines l4, a100 in that order (not alphabetical)."""
    return [
        build_entry(root, "pytorch-a100", runtime="pytorch", machine="a100", execute=execute, matrix_position=[0, 1]),
        build_entry(root, "pytorch-l4", runtime="pytorch", machine="l4", ran_locally=True, kinds=("pass", "skip"),
                    checks=("ok", "skip"), facts={"gpu_model": "NVIDIA L4", "driver_version": "550.54.15"},
                    matrix_position=[0, 0]),
        build_entry(root, "jax-a100", runtime="jax", machine="a100", kinds=("pass", "broken", "absent"), checks=(),
                    matrix_position=[1, 1]),
    ]


def json_load(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
