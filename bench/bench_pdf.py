"""PDF per notebook: gpu-runner's warm Chromium against the tools a user would pick instead.

    .venv/bin/python bench/bench_pdf.py [--keep DIR]

Same notebooks, same machine, same run:

* warm      gpu-runner: one headless Chromium (Playwright, system executable) prints every
            notebook's output.html; the one-off launch is shown apart.
* cold      ``chromium --headless --print-to-pdf`` started once per file on the same HTML.
* webpdf    ``jupyter nbconvert --to webpdf`` per notebook (.ipynb in; it converts to HTML
            itself and starts its own browser each time). nbconvert cannot be told which
            Chromium to use, so it is pointed at the system one through a
            PLAYWRIGHT_BROWSERS_PATH folder of links; when even that fails the reason is printed.

Goal: <= 0.5 s per notebook warm.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gpu_runner.report.html import NotebookHtmlRenderer
from gpu_runner.report.pdf import PdfPrinter, chromium_args, find_chromium
from gpu_runner.results import EntryInfo, EntryResult, Failure, NotebookResult


def _png(w: int = 320, h: int = 200) -> str:
    rows = b"".join(b"\x00" + b"".join(bytes((x * 255 // w, y * 255 // h, 128)) for x in range(w)) for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")
    import base64

    return base64.b64encode(raw).decode()


def notebooks() -> dict[str, nbformat.NotebookNode]:
    png = _png()
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    small = new_notebook(cells=[new_markdown_cell("# Smoke"), new_code_cell("print('ok')", execution_count=1,
                         outputs=[new_output("stream", name="stdout", text="ok\n")])], metadata=meta)
    medium = new_notebook(cells=[
        c for i in range(15) for c in (
            new_markdown_cell(f"## Step {i}\nSome *explanation* of step {i}, with `code`."),
            new_code_cell(f"import numpy as np\nx = np.arange({i * 10})\nx.sum()", execution_count=i + 1,
                          outputs=[new_output("execute_result", data={"text/plain": str(i * 45)}, execution_count=i + 1)]),
        )], metadata=meta)
    images = new_notebook(cells=[
        new_code_cell(f"plt.plot(range({i}))", execution_count=i + 1,
                      outputs=[new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})])
        for i in range(6)], metadata=meta)
    long_out = new_notebook(cells=[new_code_cell("for i in range(1500): print(i)", execution_count=1,
                            outputs=[new_output("stream", name="stdout", text="".join(f"{i}\n" for i in range(1500)))])],
                            metadata=meta)
    table = new_notebook(cells=[new_code_cell("df", execution_count=1, outputs=[new_output(
        "execute_result", execution_count=1, data={"text/plain": "df", "text/html": "<table>" + "".join(
            "<tr>" + "".join(f"<td>{r * c}</td>" for c in range(12)) + "</tr>" for r in range(200)) + "</table>"})])],
        metadata=meta)
    error = new_notebook(cells=[new_code_cell("import torch"), new_code_cell("1/0", execution_count=2, outputs=[new_output(
        "error", ename="ZeroDivisionError", evalue="division by zero",
        traceback=["\x1b[0;31mZeroDivisionError\x1b[0m Traceback (most recent call last)", "----> 1 1/0",
                   "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"])])], metadata=meta)
    return {"small": small, "medium": medium, "images": images, "long_output": long_out, "html_table": table,
            "error": error}


def webpdf_env(chromium: str, root: Path) -> dict[str, str]:
    """A PLAYWRIGHT_BROWSERS_PATH whose expected executables are links to the system Chromium."""
    import playwright

    browsers = json.loads((Path(playwright.__file__).parent / "driver/package/browsers.json").read_text())["browsers"]
    rev = {b["name"]: b["revision"] for b in browsers}
    links = {
        f"chromium_headless_shell-{rev['chromium-headless-shell']}/chrome-headless-shell-linux64/chrome-headless-shell",
        f"chromium-{rev['chromium']}/chrome-linux64/chrome",
        f"chromium_headless_shell-{rev['chromium-headless-shell']}/chrome-linux/headless_shell",
        f"chromium-{rev['chromium']}/chrome-linux/chrome",
    }
    for rel in links:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists():
            p.symlink_to(chromium)
    return {**os.environ, "PLAYWRIGHT_BROWSERS_PATH": str(root)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="keep the notebooks, HTML and PDFs in this folder")
    args = ap.parse_args()
    chromium = find_chromium()
    if not chromium:
        print("no Chromium found (install the Debian package 'chromium' or set GPU_RUNNER_CHROMIUM); nothing to measure")
        return 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-pdf-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"Chromium: {chromium}  ({subprocess.run([chromium, '--version'], capture_output=True, text=True).stdout.strip()})")
    print(f"CPUs: {os.cpu_count()}  python {sys.version.split()[0]}")

    nbs = notebooks()
    result = EntryResult(entry=EntryInfo(id="bench"), status="passed", started_at="", finished_at="", duration_s=0.0)
    renderer = NotebookHtmlRenderer()
    html_s: dict[str, float] = {}
    for name, nb in nbs.items():
        nbformat.write(nb, str(work / f"{name}.ipynb"))
        nbr = NotebookResult(path=f"{name}.ipynb", dir=name, status="passed", duration_s=1.0)
        if name == "error":
            nbr.status = "failed"
            nbr.failure = Failure(kind="error", message="", cell_index=1, ename="ZeroDivisionError", evalue="division by zero")
        t = time.perf_counter()
        (work / f"{name}.html").write_text(renderer.render(nb, result, nbr), encoding="utf-8")
        html_s[name] = time.perf_counter() - t

    # warm: one browser for all
    warm: dict[str, float] = {}
    t = time.perf_counter()
    printer = PdfPrinter(chromium)
    if not printer.start():
        print(f"warm printer could not start: {printer.unavailable_reason}")
        return 1
    launch_s = time.perf_counter() - t
    try:
        for name in nbs:
            t = time.perf_counter()
            printer.print_pdf(work / f"{name}.html", work / f"{name}.warm.pdf")
            warm[name] = time.perf_counter() - t
    finally:
        printer.close()

    # cold: one chromium process per file
    cold: dict[str, float] = {}
    for name in nbs:
        out = work / f"{name}.cold.pdf"
        cmd = [chromium, "--headless", *chromium_args(), "--no-pdf-header-footer", f"--print-to-pdf={out}",
               (work / f"{name}.html").resolve().as_uri()]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        cold[name] = time.perf_counter() - t
        if p.returncode != 0 or not out.exists():
            print(f"cold print of {name} failed: {p.stderr.strip()[-300:]}")
            cold[name] = float("nan")

    # nbconvert webpdf
    webpdf: dict[str, float] = {}
    webpdf_note = ""
    env = webpdf_env(chromium, work / "playwright-browsers")
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent)) or shutil.which("jupyter")
    if not jupyter:
        webpdf_note = "jupyter is not installed"
    else:
        for name in nbs:
            cmd = [jupyter, "nbconvert", "--to", "webpdf", "--WebPDFExporter.disable_sandbox=True",
                   "--output", f"{name}.webpdf", "--output-dir", str(work), str(work / f"{name}.ipynb")]
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
            dt = time.perf_counter() - t
            if p.returncode != 0:
                webpdf_note = "nbconvert --to webpdf could not run: " + (p.stderr.strip().splitlines() or ["?"])[-1]
                webpdf = {}
                break
            webpdf[name] = dt

    print()
    print(f"browser launch (once per run): {launch_s:.2f} s;  HTML rendering (nbconvert, same for all): "
          f"{statistics.mean(html_s.values()):.3f} s mean per notebook (first one includes loading templates)")
    print()
    head = f"{'notebook':<12} {'pages':>5} {'warm s':>8} {'cold s':>8} {'webpdf s':>9} {'cold/warm':>10} {'webpdf/warm':>12}"
    print(head)
    print("-" * len(head))
    for name in nbs:
        pages = _pages(work / f"{name}.warm.pdf")
        w, c, wp = warm[name], cold[name], webpdf.get(name, float("nan"))
        print(f"{name:<12} {pages:>5} {w:8.3f} {c:8.3f} {wp:9.3f} {c / w:9.1f}x {wp / w:11.1f}x")
    mw, mc = statistics.mean(warm.values()), statistics.mean(cold.values())
    mwp = statistics.mean(webpdf.values()) if webpdf else float("nan")
    amort = (launch_s + sum(warm.values())) / len(warm)
    print("-" * len(head))
    print(f"{'mean':<12} {'':>5} {mw:8.3f} {mc:8.3f} {mwp:9.3f} {mc / mw:9.1f}x {mwp / mw:11.1f}x")
    print()
    print(f"warm incl. the launch spread over these {len(warm)} notebooks: {amort:.3f} s per notebook")
    print(f"goal <= 0.5 s per notebook warm: {'met' if mw <= 0.5 else 'NOT met'} (mean {mw:.3f} s, max {max(warm.values()):.3f} s)")
    if webpdf_note:
        print(f"webpdf: {webpdf_note}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _pages(pdf: Path) -> str:
    if not shutil.which("pdfinfo") or not pdf.exists():
        return "?"
    out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Pages:"):
            return line.split()[-1]
    return "?"


if __name__ == "__main__":
    sys.exit(main())
