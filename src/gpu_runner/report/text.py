"""Text helpers every report shares: ANSI and XML-illegal characters, bounded tails,
the one-line description of a failure, durations and sizes as people read them."""

from __future__ import annotations

import re
import signal as _signal
from typing import Any

from ..results import Failure

# CSI (colours, cursor moves), OSC (titles, hyperlinks) and the two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
# Everything XML 1.0 forbids: C0 controls but tab/LF/CR, lone surrogates, U+FFFE/U+FFFF.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

KIND_LABELS = {
    "error": "error",
    "timeout": "timeout",
    "kernel_died": "kernel died",
    "rerun_error": "error on rerun",
    "setup_error": "setup error",
    "check_failed": "check failed",
    "interrupted": "interrupted",
}


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def xml_safe(text: str | None) -> str:
    """ANSI codes and characters XML 1.0 cannot carry removed (they would make the file unreadable)."""
    if not text:
        return ""
    return _XML_ILLEGAL.sub("", strip_ansi(str(text)))


def _resolve_carriage_returns(text: str) -> str:
    # progress bars redraw a line with \r; a reader wants what the line finally showed
    out = []
    for line in text.split("\n"):
        if "\r" in line:
            parts = [p for p in line.split("\r") if p]
            line = parts[-1] if parts else ""
        out.append(line)
    return "\n".join(out)


def clean_output(text: str | None) -> str:
    """Terminal output made readable: ANSI removed, ``\\r`` redraws resolved, XML-safe."""
    if not text:
        return ""
    return xml_safe(_resolve_carriage_returns(strip_ansi(text.replace("\r\n", "\n"))))


def tail(text: str, *, max_chars: int, max_lines: int | None = None) -> str:
    """The end of ``text``, with a first line saying what was cut."""
    lines = text.split("\n")
    cut_lines = 0
    if max_lines is not None and len(lines) > max_lines:
        cut_lines = len(lines) - max_lines
        lines = lines[-max_lines:]
    out = "\n".join(lines)
    cut_chars = 0
    if len(out) > max_chars:
        cut_chars = len(out) - max_chars
        out = out[-max_chars:]
    if cut_lines or cut_chars:
        what = f"{cut_lines} lines" if cut_lines else f"{cut_chars} characters"
        if cut_lines and cut_chars:
            what = f"{cut_lines} lines and {cut_chars} characters"
        out = f"[... {what} cut; the start is in the executed notebook ...]\n" + out
    return out


def one_line(text: str | None, max_chars: int = 500) -> str:
    """Whitespace runs (newlines included) collapsed to one space, bounded."""
    s = " ".join(xml_safe(text).split())
    return s if len(s) <= max_chars else s[: max_chars - 1] + "…"


def signal_name(sig: str | int | None) -> str | None:
    if sig is None or sig == "":
        return None
    try:
        return _signal.Signals(int(sig)).name
    except (ValueError, TypeError):
        return str(sig)


def fmt_seconds_limit(seconds: float) -> str:
    return f"{seconds:g} s"


def failure_headline(f: Failure) -> str:
    """What went wrong, without the cell: ``ZeroDivisionError: division by zero``,
    ``timed out after 600 s``, ``kernel died (SIGKILL)``."""
    kind = f.kind
    if kind in ("error", "rerun_error") and f.ename:
        core = f"{f.ename}: {f.evalue}" if f.evalue else f.ename
        if kind == "rerun_error":
            core = f"on rerun, {core}"
    elif kind == "timeout":
        core = f"timed out after {fmt_seconds_limit(f.timeout_s)}" if f.timeout_s else "timed out"
    elif kind == "kernel_died":
        core = "kernel died"
        sig = signal_name(f.signal)
        if sig:
            core += f" (killed by {sig})"
        elif f.exit_code is not None:
            core += f" (exit code {f.exit_code})"
    else:
        core = f.message or KIND_LABELS.get(kind, kind)
    return one_line(core or f.message or kind)


def failure_place(f: Failure) -> str:
    """Where it failed, as a reader counts: ``cell 4, line 2`` (the failing statement's line in
    the cell, from the traceback), ``cell 4`` when that line is unknown, else ``""``."""
    if f.cell_number is None:
        return ""
    return f"cell {f.cell_number}" + (f", line {f.cell_line}" if f.cell_line else "")


def file_lines(f: Failure) -> str:
    """The failing line in the files, for people looking for it: ``.ipynb line 57, log.py line 23``."""
    parts = []
    if f.source_line:
        parts.append(f".ipynb line {f.source_line}")
    if f.log_py_line:
        parts.append(f"log.py line {f.log_py_line}")
    return ", ".join(parts)


def describe_failure(f: Failure, *, max_chars: int = 500) -> str:
    """One line naming the cell as a reader counts it: ``cell 4, line 2: ZeroDivisionError: division by zero``."""
    head = failure_headline(f)
    place = failure_place(f)
    if place:
        head = f"{place}: {head}"
    return one_line(head, max_chars)


def failure_details(f: Failure) -> str:
    """The long text of a failure: the description, the engine's own message when it says
    more, then the traceback (ANSI removed)."""
    parts = [describe_failure(f, max_chars=2000)]
    msg = clean_output(f.message).strip()
    if msg and msg not in parts[0]:
        parts.append(msg)
    extra = []
    if f.kind == "timeout" and f.timeout_s:
        extra.append(f"limit: {fmt_seconds_limit(f.timeout_s)}")
    if f.signal:
        extra.append(f"signal: {signal_name(f.signal)}")
    if f.exit_code is not None:
        extra.append(f"exit code: {f.exit_code}")
    if extra:
        parts.append(", ".join(extra))
    if f.traceback:
        parts.append(clean_output(f.traceback).strip("\n"))
    return "\n\n".join(p for p in parts if p)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = int(round(seconds))
    m, s = divmod(total, 60)
    if m < 60:
        return f"{m} m {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} m"


def fmt_pct(pct: float | None) -> str:
    return "—" if pct is None else f"{pct:.0f} %"


def fmt_mib(mib: float | None) -> str:
    if mib is None:
        return "—"
    if mib >= 10240:
        return f"{mib / 1024:,.1f} GiB"
    return f"{mib:,.0f} MiB"


FRAMEWORK_PACKAGES = ("torch", "tensorflow", "jax", "jaxlib", "numpy", "cupy", "triton")
"""The packages reports name beside the runtime's Python, in this order (then CUDA libraries)."""


def runtime_packages(facts: dict[str, Any], *, cuda: bool = True) -> list[tuple[str, str]]:
    """``(name, version)`` of the frameworks (and, with ``cuda``, pip's ``nvidia-*`` CUDA
    libraries) that the runtime's Python has, from an entry's facts."""
    pkgs = facts.get("packages")
    if not isinstance(pkgs, dict):
        return []
    out = [(n, str(pkgs[n])) for n in FRAMEWORK_PACKAGES if pkgs.get(n)]
    if cuda:
        out += [(str(n), str(v)) for n, v in sorted(pkgs.items())
                if str(n).startswith("nvidia-") and str(n) != "nvidia-ml-py" and v]
    return out


def runtime_text(facts: dict[str, Any], *, short: bool = False) -> str:
    """The runtime's Python as one line: ``Python 3.11.9 (/opt/conda/bin/python) · torch 2.4.0 ·
    numpy 1.26.4 · ipykernel 6.29.5 from the kernel overlay``; ``short`` leaves out the path
    and the CUDA libraries. Empty when nothing is known."""
    version, exe = facts.get("python"), facts.get("python_executable")
    if not version and not exe:
        return ""
    head = f"Python {version or '?'}" + (f" ({exe})" if exe and not short else "")
    parts = [head] + [f"{n} {v}" for n, v in runtime_packages(facts, cuda=not short)]
    overlay = facts.get("kernel_overlay")
    if isinstance(overlay, dict):
        ipk = (overlay.get("packages") or {}).get("ipykernel", "?")
        parts.append(f"ipykernel {ipk} from the kernel overlay")
    return " · ".join(parts)



_ORDER = ("passed", "failed", "skipped")


def fmt_counts(c: dict[str, int], noun: str, *, always: tuple[str, ...] = ()) -> str:
    """``4 notebooks: 3 passed, 1 skipped``; ``no checks`` when there are none. Statuses with no
    item are left out unless named in ``always``; statuses other than the three follow."""
    total = c.get("total", 0)
    if not total:
        return f"no {noun}s"
    return f"{total} {noun}{'' if total == 1 else 's'}: {count_parts(c, always=always)}"


def count_parts(c: dict[str, int], *, always: tuple[str, ...] = ()) -> str:
    """The statuses of :func:`fmt_counts` alone: ``3 passed, 1 skipped``."""
    keys = [k for k in _ORDER if c.get(k) or k in always]
    keys += [k for k in c if k not in _ORDER and k != "total" and c.get(k)]
    return ", ".join(f"{c.get(k, 0)} {k.replace('_', ' ')}" for k in keys)


def add_counts(into: dict[str, int], c: dict[str, int]) -> dict[str, int]:
    for k, v in c.items():
        into[k] = into.get(k, 0) + v
    return into
