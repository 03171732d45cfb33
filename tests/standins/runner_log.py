"""How the GitHub Actions runner reads a step's output (stdout and stderr alike): every line that
starts with ``::`` (after white space) or holds ``##[`` is a workflow command, except between
``::stop-commands::TOKEN`` and ``::TOKEN::``. Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``."""

from __future__ import annotations

import re

_LINE = re.compile(r"\r\n|\r|\n")


def commands(log: str) -> list[tuple[str, str]]:
    """(name, data) of every command the runner would run, in order (stop-commands included)."""
    out: list[tuple[str, str]] = []
    stopped: str | None = None
    for line in _LINE.split(log):
        if stopped is not None:
            if line.strip() == f"::{stopped}::":
                stopped = None
            continue
        text = line.lstrip()
        if text.startswith("::"):
            end = text.find("::", 2)
            if end < 0:
                continue
            name, data = text[2:end].split(" ", 1)[0], text[end + 2:]
            out.append((name, data))
            if name == "stop-commands":
                stopped = data
        elif "##[" in line:
            start = line.index("##[")
            end = line.find("]", start)
            if end > 0:
                out.append((line[start + 3:end].split(" ", 1)[0], line[end + 1:]))
    return out


def injected(log: str, ours: frozenset[str] = frozenset({"error", "warning", "group", "endgroup"})) -> list[str]:
    """The commands in ``log`` that gpu-runner did not mean to write: any other name, and a
    stop-commands whose token is not one of gpu-runner's own."""
    bad = []
    for name, data in commands(log):
        if name == "stop-commands" and data.startswith("gpu-runner-") and len(data) == len("gpu-runner-") + 32:
            continue
        if name not in ours:
            bad.append(f"{name}: {data}")
    return bad
