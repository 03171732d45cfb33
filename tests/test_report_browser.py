"""Reports in a real headless Chromium: PDFs (rendered back with pdftoppm) and the dashboard
(DOM checked, screenshot taken). Skipped without Chromium, except under CI, where it must run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixtures.entries import build_run

from gpu_runner.report import PdfPrinter, find_chromium, write_entry_reports, write_run_reports
from gpu_runner.results import load_results

pytestmark = pytest.mark.slow


class Recorder:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)


def _need(tool: str, found: object) -> None:
    if found:
        return
    why = f"{tool} is not installed (Debian: apt-get install {'chromium' if tool == 'Chromium' else 'poppler-utils'})"
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must run the browser tests")
    pytest.skip(why)


@pytest.fixture(scope="module")
def printer():
    _need("Chromium", find_chromium())
    p = PdfPrinter()
    try:
        assert p.start(), p.unavailable_reason
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def rendered(printer, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    dirs = build_run(root)
    log = Recorder()
    for d in dirs:
        write_entry_reports(d, pdf=True, browser=printer, logger=log)
    write_run_reports(dirs, root, logger=log)
    return root


def test_every_rendered_notebook_has_a_pdf_that_pdftoppm_renders(rendered, tmp_path):
    _need("pdftoppm", shutil.which("pdftoppm"))
    count = 0
    for entry in sorted(rendered.glob("*/results.json")):
        result = load_results(entry)
        for nb in result.notebooks:
            if "html" not in nb.files:
                assert "pdf" not in nb.files
                continue
            pdf = entry.parent / nb.files["pdf"]
            assert pdf.read_bytes().startswith(b"%PDF-"), pdf
            prefix = tmp_path / f"{entry.parent.name}-{Path(nb.dir).name}".replace(" ", "_")
            subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "1", str(pdf), str(prefix)],
                           check=True, capture_output=True, timeout=60)
            pngs = list(tmp_path.glob(prefix.name + "*.png"))
            assert len(pngs) == 1 and pngs[0].stat().st_size > 2000
            count += 1
    assert count == 6  # 4 in pytorch-a100, 1 in pytorch-l4, 1 in jax-a100 (broken/absent have none)


def test_the_pdf_carries_the_banner_and_the_traceback(rendered):
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext is not installed")
    pdf = rendered / "pytorch-a100/notebooks/divide/output.pdf"
    text = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    assert "cell 3: ZeroDivisionError: division by zero" in text
    assert "Traceback" in text


def test_dashboard_in_chromium(printer, rendered, tmp_path):
    index = rendered / "index.html"
    shot = tmp_path / "dashboard.png"

    def check(browser):
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        requests, errors = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(index.as_uri(), wait_until="load")
        out = {
            "title": page.title(),
            "verdict": page.inner_text(".verdict"),
            "tiles": page.locator("a.tile").count(),
            "failed_tiles": page.locator("a.tile.s-failed").count(),
            "passed_tiles": page.locator("a.tile.s-passed").count(),
            "empty": page.locator("td.empty").count(),
            "cols": page.locator("table.grid thead th").all_inner_texts(),
            "rows": page.locator("table.grid tbody th").all_inner_texts(),
            "local_badges": page.locator("a.tile .badge.local").count(),
            "labels": [page.locator("a.tile").nth(i).get_attribute("aria-label") for i in range(3)],
        }
        l4 = page.locator("a.tile.s-passed")
        target = l4.get_attribute("href")
        out["l4_open_before"] = page.locator(f"details{target}").evaluate("d => d.open")
        l4.click()
        out["l4_open_after"] = page.locator(f"details{target}").evaluate("d => d.open")
        out["l4_in_view"] = page.locator(f"details{target} > summary").evaluate(
            "s => { const r = s.getBoundingClientRect(); return r.top >= 0 && r.top < window.innerHeight; }")
        out["focused"] = page.evaluate("document.activeElement.tagName")
        page.check("#only-failed")
        out["l4_visible_when_only_failed"] = page.locator(f"details{target}").is_visible()
        out["failed_visible_when_only_failed"] = page.locator("details.entry.s-failed").first.is_visible()
        page.uncheck("#only-failed")
        # a failure's HTML link leads to the failing cell of a page that exists
        link = page.locator(".failures a", has_text="HTML").first
        out["fail_href"] = link.get_attribute("href")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(shot), full_page=True)
        page.goto(index.as_uri())
        link = page.locator(".failures a", has_text="HTML").first
        link.click()
        page.wait_for_load_state("load")
        out["after_click_url"] = page.url
        out["anchor_ok"] = page.evaluate(
            "() => { const a = document.getElementById(location.hash.slice(1)); return !!a; }")
        out["requests"] = requests
        out["errors"] = errors
        ctx.close()
        return out

    out = printer.run(check)
    assert out["title"].startswith("✗ 2 of 3 entries failed")
    assert "2 of 3 entries failed" in out["verdict"]
    assert (out["tiles"], out["failed_tiles"], out["passed_tiles"], out["empty"]) == (3, 2, 1, 1)
    # the matrix's order (runtimes pytorch, jax; machines l4, a100), as the entry list below
    assert out["cols"][1:] == ["l4", "a100"] and out["rows"] == ["pytorch", "jax"]
    assert out["local_badges"] == 1
    # notebooks and checks counted apart
    assert any("pytorch-a100: Failed; 5 notebooks: 1 passed, 3 failed, 1 skipped; 2 system checks: 1 passed, "
               "1 failed" in lbl for lbl in out["labels"]), out["labels"]
    assert out["l4_open_before"] is False and out["l4_open_after"] is True and out["l4_in_view"]
    assert out["focused"] == "SUMMARY"
    assert not out["l4_visible_when_only_failed"] and out["failed_visible_when_only_failed"]
    assert "/output.html#cell-" in out["fail_href"]
    assert "/output.html#cell-" in out["after_click_url"] and out["anchor_ok"]
    assert all(u.startswith(("file:", "data:", "about:")) for u in out["requests"]), out["requests"]
    assert not out["errors"], out["errors"]
    assert shot.stat().st_size > 20_000


def test_notebook_html_opens_offline_without_fetching(printer, rendered):
    page_path = rendered / "pytorch-a100/notebooks/divide/output.html"

    def check(browser):
        ctx = browser.new_context()
        page = ctx.new_page()
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri() + "#cell-3", wait_until="load")
        banner = page.inner_text(".gr-banner")
        failed = page.locator(".gr-failed-cell + .jp-Cell").inner_text()
        ctx.close()
        return requests, banner, failed

    requests, banner, failed = printer.run(check)
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert "cell 3: ZeroDivisionError: division by zero" in banner
    assert "x / 0" in failed


# -- timelines: the chart a real run drew, with the NVML stand-in playing a known series ----------
@pytest.fixture(scope="module")
def gpu_series_entry(printer, gpu_series_results, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gpu-series-pdf")
    shutil.copytree(gpu_series_results, root / "results")
    entry = root / "results" / "local"
    log = Recorder()
    write_entry_reports(entry, pdf=True, browser=printer, logger=log)
    write_run_reports([entry], root / "results", logger=log)
    assert not log.warnings, log.warnings
    return entry


def _ppm_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and RGB bytes of a binary PPM (what pdftoppm writes by default)."""
    data = path.read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    assert fields[0] == b"P6" and fields[3] == b"255"
    return int(fields[1]), int(fields[2]), data[pos + 1:]


def _near(rgb: bytes, colour: str, tolerance: int = 40) -> int:
    """How many pixels are within ``tolerance`` of ``colour`` (#rrggbb)."""
    target = bytes.fromhex(colour[1:])
    return sum(1 for i in range(0, len(rgb) - 2, 3)
               if all(abs(rgb[i + k] - target[k]) <= tolerance for k in range(3)))


def test_the_timeline_chart_is_drawn_in_chromium(printer, gpu_series_entry, tmp_path):
    from gpu_runner.report.chart import MEMORY_COLOUR  # noqa: F401 - the colour the PDF check looks for

    page_path = gpu_series_entry / "notebooks/nbs/gpu_series/output.html"
    shot = tmp_path / "chart.png"

    def check(browser):
        ctx = browser.new_context(viewport={"width": 1100, "height": 900})
        page = ctx.new_page()
        requests, errors = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri(), wait_until="load")
        chart = page.locator("svg.gr-chart")
        box = chart.bounding_box()
        out = {
            "box": box,
            "visible": chart.is_visible(),
            "bands": page.locator("svg.gr-chart g.gr-cell").count(),
            "lines": page.locator("svg.gr-chart path").count(),
            "label": chart.get_attribute("aria-label"),
            "band_tip": page.locator("svg.gr-chart g.gr-cell title").nth(2).text_content(),
            "header": page.locator(".gr-cell-meta").nth(2).inner_text(),
            "requests": requests, "errors": errors,
        }
        page.locator("section.gr-timeline").screenshot(path=str(shot))
        ctx.close()
        return out

    out = printer.run(check)
    assert out["visible"] and out["box"]["width"] > 600 and out["box"]["height"] > 200
    assert out["bands"] == 5 and out["lines"] >= 5  # notebook's memory, 2 devices, RSS, utilisation
    assert "GPU memory peak 8,000 MiB" in out["label"]
    assert out["band_tip"].startswith("cell 4:") and "GPU peak 6,000 MiB" in out["band_tip"]
    assert out["header"].startswith("cell 4 · ") and "GPU peak 6,000 MiB" in out["header"]
    assert all(u.startswith(("file:", "data:")) for u in out["requests"]), out["requests"]
    assert not out["errors"]
    assert shot.stat().st_size > 10_000


def test_the_timeline_chart_is_in_the_pdf(gpu_series_entry, tmp_path):
    from gpu_runner.report.chart import MEMORY_COLOUR, UTIL_COLOURS

    _need("pdftoppm", shutil.which("pdftoppm"))
    pdf = gpu_series_entry / "notebooks/nbs/gpu_series/output.pdf"
    assert pdf.read_bytes().startswith(b"%PDF-")
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
        assert "Memory and GPU utilisation over time" in text
        assert "GPU memory of this notebook's processes" in text and "GPU 0 utilisation" in text
        assert "GPU peak 6,000 MiB" in text  # cell 4's header
    subprocess.run(["pdftoppm", "-r", "50", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
                   check=True, capture_output=True, timeout=60)
    (ppm,) = tmp_path.glob("page*.ppm")
    width, height, rgb = _ppm_pixels(ppm)
    assert width > 300 and height > 400
    # the lines are drawn on the first page in their colours: the notebook's GPU memory, its utilisation
    assert _near(rgb, MEMORY_COLOUR) > 60
    assert _near(rgb, UTIL_COLOURS[0]) > 30


def test_the_dashboard_draws_a_sparkline_per_notebook(printer, gpu_series_entry):
    index = gpu_series_entry.parent / "index.html"

    def check(browser):
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.goto(index.as_uri(), wait_until="load")
        page.locator("details.entry summary").first.click()
        spark = page.locator("svg.spark").first
        out = {"count": page.locator("svg.spark").count(), "visible": spark.is_visible(),
               "box": spark.bounding_box(), "tip": spark.locator("title").text_content()}
        ctx.close()
        return out

    out = printer.run(check)
    assert out["count"] == 1 and out["visible"] and out["box"]["width"] >= 100 and out["box"]["height"] >= 20
    assert out["tip"].startswith("GPU memory over ") and "peak 8,000 MiB" in out["tip"]


def test_the_printed_page_reaches_no_file_and_runs_no_script(printer, tmp_path):
    """A notebook's HTML output is the code under test's: when the report machine prints it, no
    script runs and no file of that machine (nor the network) gets into the PDF."""
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext is not installed")
    secret = tmp_path / "secret.txt"
    secret.write_text("report-machine-secret-3141")
    html = ("<!DOCTYPE html><html><body><h1 id=t>static text</h1>"
            "<script>document.getElementById('t').textContent = 'script ran'</script>"
            f"<iframe src='{secret.as_uri()}' width=600 height=80></iframe>"
            f"<iframe src='{secret.name}' width=600 height=80></iframe>"
            f"<object data='{secret.as_uri()}' type='text/plain'></object>"
            "<iframe src='https://example.com/' width=600 height=80></iframe>"
            "<img src='https://example.com/x.png'></body></html>")
    page = tmp_path / "output.html"
    page.write_text(html)
    pdf = printer.print_pdf(page, tmp_path / "output.pdf")
    text = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    assert "static text" in text
    assert "script ran" not in text and "report-machine-secret" not in text


def test_chromium_keeps_its_sandbox_unless_it_runs_as_root():
    from gpu_runner.report.pdf import NO_SANDBOX, chromium_args

    assert NO_SANDBOX not in chromium_args(euid=1000)
    assert NO_SANDBOX in chromium_args(euid=0)


def test_the_dashboard_runs_only_its_own_script(printer, tmp_path):
    """Markup that got into the page anyway (here: put there by hand, past the escaping) does not
    run: the page's policy allows its own script by hash and nothing else."""
    from gpu_runner.report.dashboard import render_dashboard

    page = render_dashboard([], tmp_path).replace(
        "<main>", "<main><img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>")
    index = tmp_path / "index.html"
    index.write_text(page)

    def check(browser):
        ctx = browser.new_context()
        p = ctx.new_page()
        p.goto(index.as_uri(), wait_until="load")
        p.check("#only-failed")  # our own script still runs
        out = p.title(), p.evaluate("document.body.classList.contains('only-failed')")
        ctx.close()
        return out

    title, ours_ran = printer.run(check)
    assert title != "pwned" and ours_ran


def test_dashboard_at_1400x1000_has_no_overflow_in_the_grid_and_lists_in_the_grid_order(printer, rendered, tmp_path):
    shot = tmp_path / "dashboard-1400x1000.png"

    def check(browser):
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.goto((rendered / "index.html").as_uri(), wait_until="load")
        page.screenshot(path=str(shot))
        out = page.evaluate("""() => {
            const w = document.querySelector('.grid-wrap');
            const tiles = [...document.querySelectorAll('#grid a.tile')].map(a => a.getAttribute('href'));
            const entries = [...document.querySelectorAll('details.entry')].map(d => '#' + d.id);
            return {scrollW: w.scrollWidth, clientW: w.clientWidth, scrollH: w.scrollHeight, clientH: w.clientHeight,
                    pageW: document.documentElement.scrollWidth, viewW: window.innerWidth, tiles, entries,
                    names: [...document.querySelectorAll('details.entry .entry-id')].map(e => e.textContent),
                    totals: document.querySelector('.totals').innerText};
        }""")
        ctx.close()
        return out

    out = printer.run(check)
    assert shot.stat().st_size > 20_000
    # no scrollbar beside (or under) a grid that fits: nothing to scroll
    assert out["scrollW"] <= out["clientW"] and out["scrollH"] <= out["clientH"], out
    assert out["pageW"] <= out["viewW"], out
    # reading the grid row by row meets the entries in the order of the list below it
    assert out["tiles"] == [e for e in out["entries"] if e in out["tiles"]]
    assert out["names"] == ["pytorch-l4", "pytorch-a100", "jax-a100"]
    totals = " ".join(out["totals"].split())
    assert "3 notebooks passed 5 notebooks failed 2 notebooks skipped 2/4 system checks passed, 1 skipped" in totals


def test_a_notebook_page_links_back_to_the_dashboard(printer, rendered):
    page_path = rendered / "pytorch-a100/notebooks/divide/output.html"

    def check(browser):
        ctx = browser.new_context()
        page = ctx.new_page()
        page.goto(page_path.as_uri(), wait_until="load")
        page.click("a.gr-back")
        page.wait_for_load_state("load")
        url, title = page.url, page.title()
        ctx.close()
        return url, title

    url, title = printer.run(check)
    assert url == (rendered / "index.html").as_uri() and "entries failed" in title


def test_pdf_lines_break_at_whitespace_and_long_tokens_only_where_they_must(printer, tmp_path):
    """JupyterLab's CSS breaks output anywhere ("las" / "t)"), and line breaking allows a break after
    "-" inside a token; printed, a line breaks at whitespace, and a token breaks only when it is
    longer than a line, with nothing cut off."""
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext is not installed")
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from gpu_runner.report.html import renderer
    from gpu_runner.results import EntryInfo, EntryResult, NotebookResult

    words = " ".join(f"w{i:03d}-part_last/t)" for i in range(60))
    token = "/very/long/path/" + "segment" * 40 + "/end"
    trace = [f'  File "/srv/{"dir" * 30}/last.py", line 3, in <module>', "ValueError: boom " + words]
    nb = new_notebook(cells=[
        new_code_cell(f"print('{words}')\nx = '{token}'", execution_count=1,
                      outputs=[new_output("stream", name="stdout", text=words + "\n" + token + "\n")]),
        new_code_cell("raise ValueError('boom')", execution_count=2,
                      outputs=[new_output("error", ename="ValueError", evalue="boom", traceback=trace)]),
    ], metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    result = EntryResult(entry=EntryInfo(id="local"), status="passed", started_at="", finished_at="", duration_s=1)
    page = tmp_path / "w.html"
    page.write_text(renderer().render(nbformat.from_dict(nb), result,
                                      NotebookResult(path="w.ipynb", dir="notebooks/w", status="passed",
                                                     duration_s=1.0)), encoding="utf-8")
    printer.print_pdf(page, tmp_path / "w.pdf")
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "w.pdf"), "-"], check=True, capture_output=True,
                          text=True).stdout
    # every short token whole on its line: in the code, in the output and in the traceback
    assert len(re.findall(r"w\d{3}-part_last/t\)", text)) == 180, text
    lines = [line.strip() for line in text.splitlines()]
    assert not [line for line in lines if line.endswith("-") or line.startswith(("part_last", "t)"))], text
    # the long ones broken, but whole: nothing cut off at the page's edge
    flat = "".join(text.split())
    assert flat.count(token) == 2 and f'"/srv/{"dir" * 30}/last.py",' in flat
    assert not any(token in line for line in lines)  # it did have to break


@pytest.mark.skipif(os.name != "posix", reason="sessions are POSIX")
def test_playwrights_driver_runs_in_its_own_session(printer):
    """A terminal's Ctrl-C (or `timeout -s INT`) signals gpu-runner's process group: the driver is
    not in it, so it is not killed under the run; gpu-runner closes it."""
    import psutil

    def cmdline(p: psutil.Process) -> str:
        try:
            return " ".join(p.cmdline())
        except psutil.Error:  # another test's child that has ended (a zombie until reaped), or gone
            return ""

    drivers = [p for p in psutil.Process().children(recursive=True) if "run-driver" in cmdline(p)]
    assert drivers, "no Playwright driver found"
    for d in drivers:
        assert os.getsid(d.pid) == d.pid != os.getsid(0)
        assert os.getpgid(d.pid) != os.getpgrp()


def _run_one(tmp_path: Path, name: str, *cells: str) -> Path:
    """A real run of one notebook (its HTML and PDF made as a user's run makes them); its folder."""
    from conftest import gpu_runner, make_nb

    make_nb(tmp_path, name, *cells)
    r = gpu_runner("run", name, "--out", "out", "--no-checks", cwd=tmp_path)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return tmp_path / "out/local/notebooks" / name.removesuffix(".ipynb")


def test_a_notebook_shorter_than_the_sampling_interval_gets_its_peak_drawn_at_page_width(printer, tmp_path):
    from gpu_runner.report.chart import RSS_COLOUR

    folder = _run_one(tmp_path, "short.ipynb", "x = 1", "print(x)")
    timeline = load_results(tmp_path / "out/local").notebooks[0].timeline
    assert timeline is not None and len(timeline.t_s) == 1  # shorter than the interval: one point
    shot = tmp_path / "short-chart.png"

    def check(browser):
        ctx = browser.new_context(viewport={"width": 1100, "height": 900})
        page = ctx.new_page()
        page.goto((folder / "output.html").as_uri(), wait_until="load")
        section = page.locator("section.gr-timeline")
        out = page.evaluate("""() => {
          const svg = document.querySelector('svg.gr-chart');
          const line = [...svg.querySelectorAll('path')].find(p => p.getAttribute('stroke') === '%s');
          const peak = svg.querySelector('circle.gr-peak');
          return {svg: svg.getBoundingClientRect().width,
                  section: document.querySelector('section.gr-timeline').clientWidth,
                  line: line ? line.getBBox().width : 0,
                  plot: svg.viewBox.baseVal.width,
                  stroke: line ? parseFloat(line.getAttribute('stroke-width')) : 0,
                  scaling: line ? line.getAttribute('vector-effect') : '',
                  peak: peak !== null,
                  text: svg.textContent};
        }""" % RSS_COLOUR)
        section.screenshot(path=str(shot))
        ctx.close()
        return out

    out = printer.run(check)
    assert out["svg"] >= 0.9 * out["section"] - 30  # the page's width, not a fixed 760 px
    assert out["line"] >= 0.5 * out["plot"]  # the one point is drawn over the stretch it stands for
    assert out["stroke"] >= 2 and out["scaling"] == "non-scaling-stroke"  # as thick on paper as on screen
    assert out["peak"] and "peak " in out["text"]
    assert shot.stat().st_size > 5_000
    # and in the PDF: the line is there in its colour
    subprocess.run(["pdftoppm", "-r", "150", "-f", "1", "-l", "1", str(folder / "output.pdf"), str(tmp_path / "p")],
                   check=True)
    _, _, rgb = _ppm_pixels(next(tmp_path.glob("p-*1.ppm")))
    assert _near(rgb, RSS_COLOUR) > 300


def test_the_failed_cells_outline_clears_its_header_and_its_traceback_breaks_across_pages(printer, tmp_path):
    shutil.which("pdftotext") or _need("pdftotext", None)
    folder = _run_one(tmp_path, "deep.ipynb", "for i in range(12):\n    print('line', i)",
                      "def f(n):\n    if n == 0:\n        raise ValueError('deep')\n    return f(n - 1)\nf(12)")
    shot = tmp_path / "failed-cell.png"

    def check(browser):
        ctx = browser.new_context(viewport={"width": 1100, "height": 900})
        page = ctx.new_page()
        page.goto((folder / "output.html").as_uri(), wait_until="load")
        out = page.evaluate("""() => {
          const anchor = document.querySelector('.gr-failed-cell');
          const cell = anchor.nextElementSibling, header = anchor.previousElementSibling;
          const s = getComputedStyle(cell);
          const reach = parseFloat(s.outlineOffset) + parseFloat(s.outlineWidth);
          const top = cell.getBoundingClientRect().top + window.scrollY;
          return {header: header.className, header_bottom: header.getBoundingClientRect().bottom + window.scrollY,
                  outline_top: top - reach, top: top};
        }""")
        page.screenshot(path=str(shot), full_page=True,
                        clip={"x": 0, "y": max(out["top"] - 40, 0), "width": 1100, "height": 90})
        ctx.close()
        return out

    out = printer.run(check)
    assert out["header"] == "gr-cell-meta"
    assert out["header_bottom"] <= out["outline_top"], out  # the red line passes below the header's text
    # the PDF: the traceback starts on the page its cell starts on, under the code, not on a page of its own
    first = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "-layout", str(folder / "output.pdf"), "-"],
                           capture_output=True, text=True, check=True).stdout
    assert "def f(n):" in first and "Traceback (most recent call last)" in first
