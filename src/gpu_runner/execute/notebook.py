"""Everything done to a notebook around its execution: read, parameterise, locate, trim, log.

Pure functions over ``nbformat`` notebooks; no kernels here.
"""

from __future__ import annotations

import collections
import copy
import json
import os
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
# Per-cell cap on a stream's text kept in the executed notebook; the rest goes to a file beside
# it (:class:`StreamCap`), bounded too.
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
    line_maps: list[list[int] | None] = field(default_factory=list)
    """The original file's line of each source line of each cell, by executed index (see
    :func:`cell_line_maps`); None for the injected cell."""

    def file_line(self, index: int, cell_line: int | None) -> int | None:
        """The line of the original file that holds line ``cell_line`` of cell ``index``: the
        cell's first line when the line is unknown (or outside the cell as it is in the file)."""
        lines = self.line_maps[index] if index < len(self.line_maps) else None
        if lines and cell_line is not None and 1 <= cell_line <= len(lines):
            return lines[cell_line - 1]
        return self.source_lines[index] if index < len(self.source_lines) else None
    timeout_s: float | None = None
    requires_gpu: bool = False


def read_notebook(path: Path, name: str | None = None) -> tuple[NotebookNode, str]:
    """Read and validate a notebook; any failure is a :class:`NotebookSetupError` saying why,
    naming the file ``name`` (the path as people know it; default: the file's name)."""
    name = name or path.name
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise NotebookSetupError(f"cannot read {name}: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotebookSetupError(f"{name} is not UTF-8: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookSetupError(f"{name} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    if not isinstance(data, dict) or "cells" not in data:
        raise NotebookSetupError(f"{name} is JSON but not a notebook (no 'cells')")
    try:
        # schema problems are captured, not fatal: kernels run slightly off-spec notebooks fine
        nb = nbformat.reads(text, as_version=4, capture_validation_error={})
    except Exception as e:  # noqa: BLE001 - nbformat raises many kinds
        raise NotebookSetupError(f"{name} is not a valid notebook: {e}") from e
    return nb, text


def cell_source_lines(text: str) -> list[int | None]:
    """For each cell of the notebook JSON ``text``, the 1-based line where its source starts.

    Scans the file as written (so the line is right for whatever indentation it uses);
    a multi-line source points at its first string, an empty one at the ``source`` key.
    """
    return [lines[0] if lines else None for lines in cell_line_maps(text)]


def cell_line_maps(text: str) -> list[list[int] | None]:
    """For each cell of the notebook JSON ``text``, the 1-based line of the file that holds each
    line of its source (``[i]`` for the cell's line ``i + 1``): a source written as a list of
    strings has one string a line, each on a line of the file; a source written as one string
    is on one line of the file. None where the file could not be read so far."""
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

    out: list[list[int] | None] = []
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
                    found: list[int] | None = None
                    while True:
                        pos = skip_ws(pos)
                        if text[pos] == "}":
                            pos += 1
                            break
                        ckey, pos = dec.raw_decode(text, pos)
                        pos = expect(pos, ":")
                        pos = skip_ws(pos)
                        if ckey == "source" and text[pos] == "[":
                            found = []
                            pos += 1
                            while True:  # one string after another: each source line where it is
                                pos = skip_ws(pos)
                                if text[pos] == "]":
                                    pos += 1
                                    break
                                line = line_of(pos)
                                value, pos = dec.raw_decode(text, pos)
                                found += [line] * max(1, str(value).count("\n") + (not str(value).endswith("\n")))
                                pos = skip_ws(pos)
                                if text[pos] == ",":
                                    pos += 1
                            found = found or [line_of(pos)]
                        else:
                            start = pos
                            value, pos = dec.raw_decode(text, pos)
                            if ckey == "source":
                                found = [line_of(start)] * max(1, str(value).count("\n") + 1)
                        pos = skip_ws(pos)
                        if text[pos] == ",":
                            pos += 1
                    out.append(found)
                    pos = skip_ws(pos)
                    if text[pos] == ",":
                        pos += 1
            pos = skip_ws(pos)
            if text[pos] == ",":
                pos += 1
    except (ValueError, IndexError):
        pass
    return out


_CELL_FRAME_RE = re.compile(r"^Cell In\[(\d+)\], line (\d+)", re.MULTILINE)
_INPUT_FRAME_RE = re.compile(r"^(?:File )?\"?<ipython-input-(\d+)-[0-9a-f]+>\"?(?:, line (\d+)|.*)$", re.MULTILINE)
_ARROW_RE = re.compile(r"^-*> ?(\d+) ", re.MULTILINE)


def line_in_cell(traceback: str | None, execution_count: int | None) -> int | None:
    """The 1-based line of the cell's own code where it failed, read from IPython's traceback.

    IPython names the frames of a cell's code ``Cell In[N], line L`` (IPython 8 and later) or
    ``<ipython-input-N-...>`` with the line marked ``---->`` (earlier), N being the cell's
    execution count. The last such frame of this cell is the statement that raised (a function
    the cell defines and calls counts as the cell's code). None when the traceback names no
    line of this cell (an error raised before any of its code ran, a timeout, a dead kernel)."""
    if not traceback:
        return None
    text = strip_ansi(traceback)
    best: int | None = None
    for m in _CELL_FRAME_RE.finditer(text):
        if execution_count is None or int(m.group(1)) == execution_count:
            best = int(m.group(2))
    if best is not None:
        return best
    for m in _INPUT_FRAME_RE.finditer(text):
        if execution_count is not None and int(m.group(1)) != execution_count:
            continue
        if m.group(2):
            best = int(m.group(2))
            continue
        arrow = _ARROW_RE.search(text, m.end())
        nxt = _INPUT_FRAME_RE.search(text, m.end())
        if arrow and (nxt is None or arrow.start() < nxt.start()):
            best = int(arrow.group(1))
    return best


def log_py_cell_lines(log_py: str) -> list[int]:
    """The 1-based line of each cell's ``# %%`` marker in a percent-format log.py, in cell order
    (jupytext writes one per cell); a cell's source line ``i`` is ``i`` lines below it."""
    return [n for n, line in enumerate(log_py.splitlines(), start=1) if line == "# %%" or line.startswith("# %% ")]


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
    display: str | None = None,
) -> tuple[Prepared, str]:
    """Read ``path`` and make it ready to run. Returns the prepared notebook and its text.
    ``display``: the path as errors name it."""
    nb, text = read_notebook(path, display)
    meta = nb.get("metadata", {})
    ks = meta.get("kernelspec") or {}
    kernel_name = kernel_override or ks.get("name") or "python3"
    language = (ks.get("language") or (meta.get("language_info") or {}).get("name") or "python")
    if kernel_override:
        language = "python" if kernel_override.startswith("python") else language
    original_maps = cell_line_maps(text)
    n_before = len(nb.cells)
    injected = inject_parameters(nb, parameters, language)
    maps = list(original_maps) + [None] * max(0, n_before - len(original_maps))
    if injected is not None:
        if len(nb.cells) > n_before:  # inserted, not replaced
            maps = maps[:injected] + [None] + maps[injected:]
        else:
            maps[injected] = None
    lines = [m[0] if m else None for m in maps]
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
            line_maps=maps,
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
            pieces.append(_stream_text(out))
            continue
        close()
        merged.append(out)
        if out.get("output_type") == "stream":
            pieces.append(_stream_text(out))
    close()
    cell["outputs"] = merged


SPILL_CAP_ENV = "GPU_RUNNER_SPILL_CAP"
DEFAULT_SPILL_CAP = 64_000_000
"""Characters of one cell's stream kept in its ``outputs/`` file: the first half and the last half."""


def spill_cap() -> int:
    try:
        return max(2 * MAX_CELL_TEXT, int(float(os.environ.get(SPILL_CAP_ENV, DEFAULT_SPILL_CAP))))
    except ValueError:
        return DEFAULT_SPILL_CAP


class _Ring:
    """The last ``cap`` characters of a stream, in chunks; counts what fell off the front."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: collections.deque[str] = collections.deque()
        self.size = 0
        self.dropped = 0

    def add(self, text: str) -> None:
        if len(text) >= self.cap:
            self.dropped += self.size + len(text) - self.cap
            self.chunks.clear()
            self.chunks.append(text[-self.cap:])
            self.size = self.cap
            return
        self.chunks.append(text)
        self.size += len(text)
        while self.size > self.cap:
            first = self.chunks[0]
            over = self.size - self.cap
            if len(first) <= over:
                self.chunks.popleft()
                self.size -= len(first)
                self.dropped += len(first)
            else:
                self.chunks[0] = first[over:]
                self.size -= over
                self.dropped += over

    def text(self) -> str:
        return "".join(self.chunks)


@dataclass
class _Spill:
    """One stream of one cell, past :data:`MAX_CELL_TEXT`: its head on disk, its tail in memory."""

    name: str
    path: Path
    file: Any
    head_cap: int
    written: int = 0
    total: int = 0
    tail: _Ring = field(default_factory=lambda: _Ring(0))
    nb_head: str = ""
    nb_head_cap: int = MAX_CELL_TEXT // 4
    nb_tail: _Ring = field(default_factory=lambda: _Ring(MAX_CELL_TEXT * 3 // 4))

    def add(self, text: str) -> None:
        self.total += len(text)
        if len(self.nb_head) < self.nb_head_cap:
            self.nb_head += text[: self.nb_head_cap - len(self.nb_head)]
        self.nb_tail.add(text)
        room = self.head_cap - self.written
        if room > 0:
            part = text[:room]
            self.file.write(part)
            self.written += len(part)
            text = text[room:]
        if text:
            self.tail.add(text)


class StreamCap:
    """Bounds what a cell's streams cost while they stream, whatever their size.

    Up to ``limit`` characters per stream, outputs go into the notebook as usual. Past it,
    the stream is spilled to ``spill_dir/cell-<n>-<stream>.txt``: the file gets the text
    as it comes up to half of ``cap`` characters, then keeps the last half of ``cap`` in
    memory (older text is dropped and counted) and writes it at the end of the cell, after
    a line saying how much was dropped. The notebook keeps the stream's first quarter of
    ``limit`` and its last three quarters, with a line saying what was cut and where the
    rest is. Memory: at most ``cap / 2`` characters per stream being spilled, whatever the
    size of the output.
    """

    def __init__(self, spill_dir: Path, *, limit: int = MAX_CELL_TEXT, cap: int | None = None) -> None:
        self.spill_dir = spill_dir
        self.limit = limit
        self.cap = cap if cap is not None else spill_cap()
        self._sizes: dict[str, int] = {}
        self._spills: dict[str, _Spill] = {}
        self.index: int | None = None

    def start(self, index: int) -> None:
        """A cell begins (again, on a rerun): nothing carried over."""
        self.index = index
        self._sizes.clear()
        self._spills.clear()

    def take(self, outs: list[Any], msg: dict[str, Any], index: int) -> bool:
        """A stream message for cell ``index``: True when it was spilled (not for the notebook)."""
        if index != self.index:
            return False
        content = msg.get("content") or {}
        name = str(content.get("name", "stream"))
        text = content.get("text", "")
        if not isinstance(text, str):
            text = "".join(text)
        spill = self._spills.get(name)
        if spill is None:
            seen = self._sizes.get(name, 0) + len(text)
            self._sizes[name] = seen
            if seen <= self.limit:
                return False
            spill = self._begin(outs, name, index)
        spill.add(text)
        return True

    def _begin(self, outs: list[Any], name: str, index: int) -> _Spill:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        fname = f"cell-{index + 1}-{name}.txt"
        path = self.spill_dir / fname
        f = open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed in finish()
        spill = _Spill(name=name, path=path, file=f, head_cap=self.cap // 2, tail=_Ring(self.cap - self.cap // 2),
                       nb_head_cap=self.limit // 4, nb_tail=_Ring(self.limit - self.limit // 4 - 400))
        before = "".join(_stream_text(o) for o in outs if _is_stream(o, name))
        spill.add(before)
        self._spills[name] = spill
        return spill

    def finish(self, cell: NotebookNode) -> list[str]:
        """The cell ended (however): close its spill files, bound its streams in the notebook.
        Returns the spill files written (names under ``spill_dir``)."""
        written = []
        for name, spill in self._spills.items():
            dropped = spill.tail.dropped
            if dropped:
                spill.file.write(
                    f"\n… [{dropped:,} characters dropped by gpu-runner: this file keeps the first {spill.written:,} "
                    f"and the last {spill.tail.size:,} of {spill.total:,} ({SPILL_CAP_ENV}={self.cap})] …\n")
            spill.file.write(spill.tail.text())
            spill.file.close()
            written.append(spill.path.name)
            outs = cell.get("outputs", [])
            first = next((i for i, o in enumerate(outs) if _is_stream(o, name)), None)
            head = spill.nb_head
            keep_tail = spill.nb_tail.text()
            cut = spill.total - len(head) - len(keep_tail)
            where = (f"the whole output is in outputs/{spill.path.name}" if not dropped else
                     f"outputs/{spill.path.name} keeps its first {spill.written:,} and last {spill.tail.size:,} "
                     f"characters; {dropped:,} were dropped")
            merged = nbformat.v4.new_output(
                "stream", name=name, text=f"{head}\n… [{cut:,} characters cut by gpu-runner; {where}] …\n{keep_tail}")
            kept = [o for o in outs if not _is_stream(o, name)]
            kept.insert(first if first is not None else len(kept), merged)
            cell["outputs"] = kept
        self._spills.clear()
        self._sizes.clear()
        self.index = None
        return written

    @property
    def spilling(self) -> list[_Spill]:
        return list(self._spills.values())


def _is_stream(out: Any, name: str) -> bool:
    return out.get("output_type") == "stream" and out.get("name") == name


def _stream_text(out: Any) -> str:
    t = out.get("text", "")
    return "".join(t) if isinstance(t, list) else t


def cap_outputs(cell: NotebookNode, index: int, spill_dir: Path, limit: int = MAX_CELL_TEXT) -> list[str]:
    """Keep at most ``limit`` characters of each stream in the notebook; the whole text of an
    over-long stream is written to ``spill_dir/cell-<n>-<stream>.txt``. Returns files written."""
    written: list[str] = []
    for out in cell.get("outputs", []):
        if out.get("output_type") != "stream":
            continue
        text = _stream_text(out)
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
