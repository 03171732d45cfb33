"""PDF without TeX: headless Chromium prints the notebook's HTML.

One warm browser serves every notebook of a run (launching Chromium costs most of a
second; printing a page a small part of that). Playwright drives the system Chromium
through ``executable_path`` (its own browser downloads are never used). Every
Playwright call runs on one private thread, so a :class:`PdfPrinter` may be shared by
the threads of a run and used from inside a running asyncio loop.

The page printed is the notebook's own HTML, outputs included: whatever the code under test
chose to display. So Chromium prints it locked down: JavaScript off, offline, and the page
served from a made-up origin (``http://gpu-runner.invalid/``) with every other request
refused, so nothing on the disk (no ``file://``) and nothing on the network can reach the PDF.
Chromium's own sandbox is on except as root, where Chromium cannot run with it (and where it
cannot start, say without user namespaces, the printer says so once and prints without it).
Outputs drawn by JavaScript (interactive plots) show their static fallback in the PDF.

Chromium is found through ``GPU_RUNNER_CHROMIUM``, else ``chromium``,
``chromium-browser``, ``google-chrome`` or ``google-chrome-stable`` on ``PATH``. When
there is none, or it does not start, the printer says so once and prints nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import first_line
from ..files import write_bytes_atomic
from .untrusted import read_bytes

CHROMIUM_ENV = "GPU_RUNNER_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--mute-audio",
]
NO_SANDBOX = "--no-sandbox"
ORIGIN = "http://gpu-runner.invalid"
"""Where the printed page seems to come from: a name that never resolves (RFC 6761)."""


def chromium_args(euid: int | None = None) -> list[str]:
    """Chromium's arguments: the sandbox stays on unless we are root (Chromium refuses it there)."""
    if euid is None:
        euid = os.geteuid() if hasattr(os, "geteuid") else 1
    return [*CHROMIUM_ARGS, *([NO_SANDBOX] if euid == 0 else [])]


_warned_lock = threading.Lock()
_warned: set[str] = set()


class PdfError(Exception):
    """One page could not be printed (the printer stays usable)."""


def find_chromium() -> str | None:
    """The Chromium executable to use, or None."""
    env = os.environ.get(CHROMIUM_ENV, "").strip()
    if env:
        found = shutil.which(env)
        return found if found else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _warn_once(logger: Any, key: str, message: str) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    _warning(logger, message)


def _warning(logger: Any, message: str) -> None:
    if logger is not None:
        logger.warning(message)
    else:
        import click

        from ..github.workflow import safe_log

        click.echo(safe_log(f"gpu-runner: warning: {message}"), err=True)


class PdfPrinter:
    """A warm headless Chromium that prints HTML files to PDF.

    Use as a context manager, or call :meth:`close`. The browser starts on the first
    :meth:`print_pdf` (or :meth:`start`); :attr:`available` is False, with
    :attr:`unavailable_reason`, when there is no Chromium or it would not start.
    """

    def __init__(self, executable: str | None = None, *, logger: Any = None, timeout_s: float = 120.0) -> None:
        self.executable = executable or find_chromium()
        self.logger = logger
        self.timeout_ms = int(timeout_s * 1000)
        self.unavailable_reason: str | None = None
        from ..errors import missing_extra

        if missing_extra("pdf") is not None:
            self.unavailable_reason = ("Playwright, which drives Chromium, is not installed "
                                       "(pip install 'gpu-runner[pdf]')")
        elif self.executable is None:
            env = os.environ.get(CHROMIUM_ENV, "").strip()
            self.unavailable_reason = (
                f"{CHROMIUM_ENV}={env!r} is not an executable" if env
                else "no Chromium found (install the Debian package 'chromium' or set "
                f"{CHROMIUM_ENV} to a Chromium or Chrome executable)"
            )
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pw: Any = None
        self._browser: Any = None
        self._page: Any = None
        self._started = False
        self._docs: dict[str, bytes] = {}
        self._serial = itertools.count(1)
        self.version: str | None = None
        self.sandboxed: bool | None = None
        """Whether Chromium runs with its sandbox (known once started)."""

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    def start(self) -> bool:
        """Launch the browser if not yet done; False (and one warning) when it cannot run."""
        with self._lock:
            if self._started or not self.available:
                if not self.available:
                    self._say_unavailable()
                return self.available
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-runner-pdf")
            try:
                self.version = self._pool.submit(self._launch).result()
                self._started = True
            except Exception as e:  # noqa: BLE001 - any launch failure means: no PDFs
                self.unavailable_reason = f"Chromium ({self.executable}) did not start: {first_line(e)}"
                self._pool.submit(self._shutdown).result()
                self._pool.shutdown(wait=True)
                self._pool = None
                self._say_unavailable()
            return self.available

    def _say_unavailable(self) -> None:
        _warn_once(self.logger, f"pdf:{self.unavailable_reason}", f"no PDFs: {self.unavailable_reason}; "
                   "HTML and every other report are written as usual (--no-pdf silences this)")

    def _launch(self) -> str:
        from playwright.sync_api import sync_playwright

        with _driver_in_own_session():
            self._pw = sync_playwright().start()
        args = chromium_args()
        try:
            self._browser = self._pw.chromium.launch(executable_path=self.executable, args=args, headless=True,
                                                     timeout=self.timeout_ms)
        except Exception as e:  # noqa: BLE001 - e.g. no user namespaces for the sandbox
            if NO_SANDBOX in args:
                raise
            self.sandboxed = False
            _warn_once(self.logger, "pdf:sandbox", f"Chromium's sandbox did not start ({first_line(e)}); printing "
                       "without it, with JavaScript off and no file or network access")
            self._browser = self._pw.chromium.launch(executable_path=self.executable, args=[*args, NO_SANDBOX],
                                                     headless=True, timeout=self.timeout_ms)
        else:
            self.sandboxed = NO_SANDBOX not in args
        # open the page and print once now, so the first notebook does not pay for the
        # renderer process, fonts and the PDF backend starting up
        self._page = self._new_page()
        self._load(b"<!DOCTYPE html><p>warm-up</p>")
        self._page.pdf(format="A4")
        return self._browser.version

    def _new_page(self) -> Any:
        ctx = self._browser.new_context(java_script_enabled=False, offline=True, service_workers="block",
                                        accept_downloads=False)
        page = ctx.new_page()
        page.set_default_timeout(self.timeout_ms)
        page.route("**/*", self._serve)
        return page

    def _serve(self, route: Any) -> None:
        """The one page being printed, and nothing else: no file, no network, no other URL."""
        body = self._docs.get(route.request.url)
        if body is None:
            route.abort()
        else:
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=body)

    def _load(self, body: bytes) -> None:
        url = f"{ORIGIN}/{next(self._serial)}/output.html"
        self._docs[url] = body
        try:
            self._page.goto(url, wait_until="load")
        finally:
            self._docs.pop(url, None)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                try:
                    self._pool.submit(self._shutdown).result(timeout=30)
                except Exception:  # noqa: BLE001 - closing must never fail a run
                    pass
                self._pool.shutdown(wait=True)
                self._pool = None
            self._started = False

    def _shutdown(self) -> None:
        for obj, method in ((self._browser, "close"), (self._pw, "stop")):
            if obj is not None:
                try:
                    getattr(obj, method)()
                except Exception:  # noqa: BLE001
                    pass
        self._browser = self._pw = self._page = None

    def __enter__(self) -> PdfPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- printing ------------------------------------------------------------------------
    def print_pdf(self, html_path: Path, pdf_path: Path) -> Path:
        """Print ``html_path`` to ``pdf_path`` (A4, backgrounds on). Raises :class:`PdfError`."""
        if not self.start():
            raise PdfError(self.unavailable_reason or "no Chromium")
        assert self._pool is not None
        html_path = Path(html_path)
        pdf_path = Path(pdf_path)
        try:
            body = read_bytes(html_path)  # never through a symbolic link: the page may be the code under test's
        except (OSError, ValueError) as e:
            raise PdfError(f"cannot read {html_path.name}: {e}") from e
        try:
            data = self._pool.submit(self._print, body).result()
        except PdfError:
            raise
        except Exception as e:  # noqa: BLE001
            raise PdfError(f"printing {html_path.name} failed: {first_line(e)}") from e
        write_bytes_atomic(pdf_path, data)
        return pdf_path

    def run(self, fn: Any) -> Any:
        """Call ``fn(browser)`` on the printer's thread with the warm Playwright browser
        (for screenshots or checks that need a real page); returns what ``fn`` returns."""
        if not self.start():
            raise PdfError(self.unavailable_reason or "no Chromium")
        assert self._pool is not None
        return self._pool.submit(fn, self._browser).result()

    def _print(self, body: bytes) -> bytes:
        for attempt in (1, 2):
            if self._page is None or self._page.is_closed():
                self._page = self._new_page()
            try:
                self._load(body)
                # the boxes are sized for the printed page: lay it out at the page's width to measure,
                # then print as before (printing lays the page out at the paper's width itself)
                viewport = self._page.viewport_size
                self._page.emulate_media(media="print")
                self._page.set_viewport_size(_PRINT_VIEWPORT)
                self._page.evaluate(_NO_BREAK_AFTER_PUNCTUATION)
                if viewport:
                    self._page.set_viewport_size(viewport)
                self._page.emulate_media(media=None)
                return self._page.pdf(
                    format="A4",
                    print_background=True,
                    prefer_css_page_size=True,
                    margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"},
                )
            except Exception:
                # a crashed or wedged page: start a fresh one once, then give up on this file
                try:
                    self._page.context.close()
                except Exception:  # noqa: BLE001
                    pass
                self._page = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


_SESSION_HELPER = Path(__file__).with_name("_session.py")

# A4 less the 10 mm side margins below, in CSS pixels (96 per inch): the width the page is printed at
_PRINT_VIEWPORT = {"width": round((210 - 20) / 25.4 * 96), "height": 1000}

# Line breaking (UAX 14) also allows a break inside a token after "-", "|", "/" and other
# punctuation: in code that splits `x-part` or `a/b` across lines. In the printed copy only,
# each such token that fits on a line is made one unbreakable box (an inline-block), so lines
# break at whitespace; a token too long for a line is left alone and breaks where it must
# (overflow-wrap: anywhere, see html.py). The text itself is not changed (copying from the PDF
# gives what the notebook has).
_NO_BREAK_AFTER_PUNCTUATION = r"""() => {
  const LIMIT = 200000;  // characters per <pre>: beyond, leave it as it is (speed)
  for (const pre of document.querySelectorAll("pre")) {
    const text = pre.textContent;
    if (!text || text.length > LIMIT || !/[^\s\w]\S/.test(text)) continue;
    const probe = document.createElement("span");
    probe.textContent = "x".repeat(100);
    probe.style.whiteSpace = "pre";
    pre.appendChild(probe);
    const charW = probe.getBoundingClientRect().width / 100;
    probe.remove();
    const room = charW > 0 ? Math.floor((pre.clientWidth || pre.getBoundingClientRect().width) / charW) - 1 : 0;
    if (room < 8) continue;
    const nodes = [], starts = [];
    const walker = document.createTreeWalker(pre, NodeFilter.SHOW_TEXT);
    let pos = 0;
    while (walker.nextNode()) { nodes.push(walker.currentNode); starts.push(pos); pos += walker.currentNode.data.length; }
    const where = (offset) => {  // the text node and the offset in it of a character of the whole text
      let lo = 0, hi = nodes.length - 1;
      while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (starts[mid] <= offset) lo = mid; else hi = mid - 1; }
      return [nodes[lo], offset - starts[lo]];
    };
    const tokens = [];
    for (const m of text.matchAll(/\S+/g)) {
      if (m[0].length <= room && /[^\s\w]\S/.test(m[0])) tokens.push([m.index, m.index + m[0].length]);
    }
    for (const [a, b] of tokens.reverse()) {  // from the end: earlier offsets stay valid
      const range = document.createRange();
      const [na, oa] = where(a);
      const [nb, ob] = where(b - 1);
      range.setStart(na, oa);
      range.setEnd(nb, ob + 1);
      const box = document.createElement("span");
      box.style.display = "inline-block";
      box.style.whiteSpace = "pre";
      box.appendChild(range.extractContents());
      range.insertNode(box);
    }
  }
}"""


@contextlib.contextmanager
def _driver_in_own_session() -> Iterator[None]:
    """Start Playwright's Node.js driver as the leader of its own session.

    Otherwise it sits in gpu-runner's process group, and a terminal's Ctrl-C (or ``timeout -s
    INT``, which signals the group) kills it under the run, which then cannot close the browser
    cleanly ("Future exception was never retrieved"). gpu-runner handles the signal and closes
    the browser itself. Playwright has no option for this: its transport runs
    ``compute_driver_executable()``'s pair as ``EXECUTABLE ENTRYPOINT run-driver``; for the start
    that pair is this Python and ``_session.py``, which calls setsid and execs the real driver.
    Where that hook is not there (another Playwright, no POSIX), the driver starts as before.
    """
    undo: Callable[[], None] = lambda: None  # noqa: E731
    try:
        if os.name != "posix":
            raise RuntimeError
        from playwright._impl import transport  # see above

        original = transport.compute_driver_executable
        original()  # the same error as without us when there is no driver
        transport.compute_driver_executable = lambda: (sys.executable, str(_SESSION_HELPER))

        def undo() -> None:
            transport.compute_driver_executable = original
    except Exception:  # noqa: BLE001 - start the driver the usual way
        pass
    try:
        yield
    finally:
        undo()
