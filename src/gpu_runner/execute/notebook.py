"""Everything done to a notebook around its execution: read, parameterise, locate, trim, log.

Pure functions over ``nbformat`` notebooks; no kernels here.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
SKIP_TAG = "skip-execution"
# Exceptions that mean "skip this notebook" rather than "it failed": unittest's and pytest's.
SKIP_ENAMES = {"SkipTest", "Skipped", "unittest.case.SkipTest"}
# Per-cell cap on text kept in the executed notebook; the whole text goes to a file beside it.
MAX_CELL_TEXT = 1_000_000


class NotebookSetupError(Exception):
    """The notebook cannot be run at all (unreadable, not JSON, bad parameters...)."""


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


@dataclass
class Prepared:
    nb: NotebookNode
    kernel_name: str
    language: str
    parameters: dict[str, Any] = field(default_factory=dict)
    injected_index: int | None = None
    source_lines: list[int | None] = field(default_factory=list)
    """1-based line in the original file where each cell's source starts, by executed index."""
    timeout_s: float | None = None
    requires_gpu: bool = False


def read_notebook(path: Path) -> tuple[NotebookNode, str]:
    """Read and validate a notebook; any failure is a :class:`NotebookSetupError` saying why."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise NotebookSetupError(f"cannot read {path.name}: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotebookSetupError(f"{path.name} is not UTF-8: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookSetupError(f"{path.name} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    if not isinstance(data, dict) or "cells" not in data:
        raise NotebookSetupError(f"{path.name} is JSON but not a notebook (no 'cells')")
    try:
        # schema problems are captured, not fatal: kernels run slightly off-spec notebooks fine
        nb = nbformat.reads(text, as_version=4, capture_validation_error={})
    except Exception as e:  # noqa: BLE001 - nbformat raises many kinds
        raise NotebookSetupError(f"{path.name} is not a valid notebook: {e}") from e
    return nb, text


def cell_source_lines(text: str) -> list[int | None]:
    """For each cell of the notebook JSON ``text``, the 1-based line where its source starts.

    Scans the file as written (so the line is right for whatever indentation it uses);
    a multi-line source points at its first string, an empty one at the ``source`` key.
    """
    dec = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    pos = 0

    def skip_ws(i: int) -> int:
        return ws.match(text, i).end()  # type: ignore[union-attr]

    def expect(i: int, ch: str) -> int:
        i = skip_ws(i)
        if text[i] != ch:
            raise ValueError
        return i + 1

    def line_of(i: int) -> int:
        return text.count("\n", 0, i) + 1

    out: list[int | None] = []
    try:
        pos = expect(pos, "{")
        while True:
            pos = skip_ws(pos)
            if text[pos] == "}":
                break
            key, pos = dec.raw_decode(text, pos)
            pos = expect(pos, ":")
            pos = skip_ws(pos)
            if key != "cells":
                _, pos = dec.raw_decode(text, pos)
            else:
                pos = expect(pos, "[")
                while True:
                    pos = skip_ws(pos)
                    if text[pos] == "]":
                        pos += 1
                        break
                    pos = expect(pos, "{")
                    found: int | None = None
                    while True:
                        pos = skip_ws(pos)
                        if text[pos] == "}":
                            pos += 1
                            break
                        ckey, pos = dec.raw_decode(text, pos)
                        pos = expect(pos, ":")
                        pos = skip_ws(pos)
                        start = pos
                        value, pos = dec.raw_decode(text, pos)
                        if ckey == "source":
                            found = start
                            if isinstance(value, list) and value:
                                found = skip_ws(start + 1)
                        pos = skip_ws(pos)
                        if text[pos] == ",":
                            pos += 1
                    out.append(None if found is None else line_of(found))
                    pos = skip_ws(pos)
                    if text[pos] == ",":
                        pos += 1
            pos = skip_ws(pos)
            if text[pos] == ",":
                pos += 1
    except (ValueError, IndexError):
        pass
    return out


def _python_literal(value: Any) -> str:
    """A Python expression for a YAML scalar (papermill-style injection)."""
    if isinstance(value, float) and value != value:  # NaN
        return "float('nan')"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "float('inf')" if value > 0 else "-float('inf')"
    return repr(value)


def inject_parameters(nb: NotebookNode, params: dict[str, Any], language: str) -> int | None:
    """Insert a cell tagged ``injected-parameters`` after the cell tagged ``parameters``
    (or at the top); replaces an earlier injected cell. Returns the new cell's index."""
    if not params:
        return None
    if language.lower() != "python":
        raise NotebookSetupError(f"parameters can only be injected into Python notebooks (this one is {language})")
    lines = ["# Parameters (injected by gpu-runner)"]
    lines += [f"{name} = {_python_literal(value)}" for name, value in params.items()]
    cell = nbformat.v4.new_code_cell(source="\n".join(lines) + "\n", metadata={"tags": [INJECTED_TAG]})
    if nb.get("nbformat_minor", 0) < 5:
        cell.pop("id", None)  # cell ids only exist from nbformat 4.5 on
    for i, c in enumerate(nb.cells):
        if INJECTED_TAG in c.get("metadata", {}).get("tags", []):
            nb.cells[i] = cell
            return i
    at = 0
    for i, c in enumerate(nb.cells):
        if PARAMETERS_TAG in c.get("metadata", {}).get("tags", []):
            at = i + 1
            break
    nb.cells.insert(at, cell)
    return at


def prepare(
    path: Path,
    *,
    kernel_override: str | None,
    parameters: dict[str, Any],
) -> tuple[Prepared, str]:
    """Read ``path`` and make it ready to run. Returns the prepared notebook and its text."""
    nb, text = read_notebook(path)
    meta = nb.get("metadata", {})
    ks = meta.get("kernelspec") or {}
    kernel_name = kernel_override or ks.get("name") or "python3"
    language = (ks.get("language") or (meta.get("language_info") or {}).get("name") or "python")
    if kernel_override:
        language = "python" if kernel_override.startswith("python") else language
    original_lines = cell_source_lines(text)
    injected = inject_parameters(nb, parameters, language)
    lines = list(original_lines) + [None] * max(0, len(nb.cells) - len(original_lines))
    if injected is not None:
        if len(nb.cells) > len(original_lines):  # inserted, not replaced
            lines = original_lines[:injected] + [None] + original_lines[injected:]
        else:
            lines[injected] = None
    timeout = (meta.get("execution") or {}).get("timeout")
    own = meta.get("gpu_runner") or {}
    return (
        Prepared(
            nb=nb,
            kernel_name=kernel_name,
            language=language,
            parameters=dict(parameters),
            injected_index=injected,
            source_lines=lines,
            timeout_s=float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None,
            requires_gpu=bool(own.get("requires_gpu")),
        ),
        text,
    )


def is_code(cell: NotebookNode) -> bool:
    return cell.get("cell_type") == "code" and bool(str(cell.get("source", "")).strip())


def is_skipped(cell: NotebookNode) -> bool:
    return SKIP_TAG in cell.get("metadata", {}).get("tags", [])


def error_output(cell: NotebookNode) -> dict[str, Any] | None:
    for out in reversed(cell.get("outputs", [])):
        if out.get("output_type") == "error":
            return out
    return None


def output_text(cell: NotebookNode) -> str:
    """The cell's text output as a reader sees it (streams, plain-text results, errors)."""
    parts: list[str] = []
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            parts.append(str(out.get("text", "")))
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "text/plain" in data:
                parts.append(str(data["text/plain"]) + "\n")
        elif kind == "error":
            parts.append("\n".join(out.get("traceback", [])) + "\n")
    return strip_ansi("".join(parts))


def tail(text: str, limit: int = 4000) -> str:
    if len(text) <= limit:
        return text
    return "…" + text[-limit:]


_BACKSPACE_RE = re.compile(r"[^\n]\b")
_CR_RE = re.compile(r"^.*\r(?=[^\n])", re.MULTILINE)


def coalesce_streams(cell: NotebookNode) -> None:
    """Merge consecutive stream outputs of the same stream, in linear time, and apply
    carriage returns and backspaces as a terminal would (progress bars)."""
    merged: list[Any] = []
    pieces: list[str] = []

    def close() -> None:
        if pieces:
            text = "".join(pieces)
            if "\b" in text:
                prev = None
                while prev != text:
                    prev, text = text, _BACKSPACE_RE.sub("", text)
            if "\r" in text:
                text = _CR_RE.sub("", text.replace("\r\n", "\n"))
            merged[-1]["text"] = text
            pieces.clear()

    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and merged and pieces and merged[-1].get("name") == out.get("name"):
            t = out.get("text", "")
            pieces.append("".join(t) if isinstance(t, list) else t)
            continue
        close()
        merged.append(out)
        if out.get("output_type") == "stream":
            t = out.get("text", "")
            pieces.append("".join(t) if isinstance(t, list) else t)
    close()
    cell["outputs"] = merged


def cap_outputs(cell: NotebookNode, index: int, spill_dir: Path, limit: int = MAX_CELL_TEXT) -> list[str]:
    """Keep at most ``limit`` characters of each stream in the notebook; the whole text of an
    over-long stream is written to ``spill_dir/cell-<n>-<stream>.txt``. Returns files written."""
    written: list[str] = []
    for out in cell.get("outputs", []):
        if out.get("output_type") != "stream":
            continue
        text = out.get("text", "")
        if isinstance(text, list):
            text = "".join(text)
        if len(text) <= limit:
            continue
        spill_dir.mkdir(parents=True, exist_ok=True)
        name = f"cell-{index + 1}-{out.get('name', 'stream')}.txt"
        (spill_dir / name).write_text(text, encoding="utf-8", errors="replace")
        written.append(name)
        head, keep_tail = text[: limit // 4], text[-(limit * 3 // 4) :]
        cut = len(text) - len(head) - len(keep_tail)
        out["text"] = (
            f"{head}\n… [{cut:,} characters cut by gpu-runner; the whole output is in outputs/{name}] …\n{keep_tail}"
        )
    return written


def render_log_py(nb: NotebookNode) -> str:
    """The executed notebook as a jupytext percent-format script, outputs as comments."""
    import jupytext

    copy_nb = copy.deepcopy(nb)
    for cell in copy_nb.cells:
        if cell.get("cell_type") != "code":
            continue
        text = output_text(cell)
        if text.strip():
            commented = "\n".join("# " + line if line else "#" for line in text.rstrip("\n").split("\n"))
            src = str(cell.source).rstrip("\n")
            cell.source = f"{src}\n# ---- output ----\n{commented}"
        cell.outputs = []
    return jupytext.writes(copy_nb, fmt="py:percent")
