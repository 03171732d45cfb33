"""GitHub Actions workflow commands and environment files, written as the runner reads them.

* Commands go to stdout: ``::error file=F,line=L,title=T::MESSAGE``. In the message,
  ``%``, ``\\r`` and ``\\n`` are escaped (``%25``, ``%0D``, ``%0A``); in property values
  also ``:`` and ``,`` (``%3A``, ``%2C``).
* GitHub keeps at most 10 error annotations (and 10 warnings) per step and 50 per job;
  :func:`annotate_errors` emits within those limits and says how many were left out.
* Any other line the runner reads (stdout and stderr alike) is a command too when it starts with
  ``::`` (after white space) or holds ``##[``. Text that comes from results, notebooks or errors
  goes through :func:`safe_log`, which wraps such text in ``::stop-commands::TOKEN`` ...
  ``::TOKEN::`` (a fresh random token), so it is shown as it is and never run.
* ``$GITHUB_OUTPUT``: ``name=value`` lines, or ``name<<DELIM`` blocks for values with
  newlines. ``$GITHUB_STEP_SUMMARY``: Markdown, at most 1 MiB per step.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MAX_ERRORS_PER_STEP = 10
MAX_ANNOTATIONS_PER_JOB = 50
STEP_SUMMARY_LIMIT = 1024 * 1024
MESSAGE_MAX_CHARS = 4000


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _command_like(line: str) -> bool:
    return line.lstrip().startswith("::") or "##[" in line


def safe_log(text: str, *, github: bool | None = None) -> str:
    """``text`` for the run log, where the runner will not take any line of it for a workflow
    command: unchanged when no line could be one (or outside GitHub Actions), else wrapped in
    ``::stop-commands::`` with a token the text cannot know."""
    if github is None:
        github = in_github_actions()
    if not github or not any(_command_like(line) for line in _LINE_BREAK.split(text)):
        return text
    token = f"gpu-runner-{secrets.token_hex(16)}"
    return f"::stop-commands::{token}\n{text}\n::{token}::"


def command(name: str, message: str = "", **properties: object) -> str:
    """``::name k=v,...::message`` with every part escaped; None properties are left out."""
    props = ",".join(
        f"{k}={escape_property(str(v))}" for k, v in properties.items() if v is not None and str(v) != ""
    )
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


@dataclass
class Annotation:
    message: str
    title: str | None = None
    file: str | None = None
    line: int | None = None


def annotate_errors(
    annotations: list[Annotation],
    *,
    stream: IO[str] | None = None,
    limit: int = MAX_ERRORS_PER_STEP,
) -> tuple[int, int]:
    """Print ``::error`` commands, at most ``limit`` (GitHub drops the rest silently), and a
    ``::warning`` naming how many were left out. Returns (emitted, left out)."""
    out = stream or sys.stdout
    limit = max(0, min(limit, MAX_ERRORS_PER_STEP, MAX_ANNOTATIONS_PER_JOB - 1))
    shown = annotations[:limit]
    for a in shown:
        msg = a.message if len(a.message) <= MESSAGE_MAX_CHARS else a.message[: MESSAGE_MAX_CHARS - 1] + "…"
        print(command("error", msg, file=a.file, line=a.line, title=a.title), file=out)
    left = len(annotations) - len(shown)
    if left:
        print(
            command(
                "warning",
                f"{left} more failure(s) not annotated: GitHub shows at most {MAX_ERRORS_PER_STEP} error "
                f"annotations per step. Every failure is in the job summary, junit.xml and index.html.",
                title=f"{left} failure annotation(s) left out",
            ),
            file=out,
        )
    out.flush()
    return len(shown), left


def set_outputs(values: dict[str, object], path: str | os.PathLike[str] | None = None) -> bool:
    """Append step outputs to ``$GITHUB_OUTPUT``; False when there is no such file."""
    target = path or os.environ.get("GITHUB_OUTPUT")
    if not target:
        return False
    lines = []
    for name, value in values.items():
        text = str(value)
        if "\n" in text or "\r" in text:
            delim = f"ghadelimiter_{secrets.token_hex(8)}"
            lines.append(f"{name}<<{delim}\n{text}\n{delim}\n")
        else:
            lines.append(f"{name}={text}\n")
    with open(target, "a", encoding="utf-8") as f:
        f.write("".join(lines))
    return True


def append_step_summary(
    markdown: str, path: str | os.PathLike[str] | None = None, *, limit: int = STEP_SUMMARY_LIMIT
) -> bool:
    """Append Markdown to ``$GITHUB_STEP_SUMMARY`` within the step's 1 MiB (a summary
    over the limit makes GitHub drop the whole step summary). Returns whether any was written."""
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    try:
        used = Path(target).stat().st_size
    except OSError:
        used = 0
    room = limit - used
    data = markdown.encode("utf-8")
    if not markdown.endswith("\n"):
        data += b"\n"
    if len(data) > room:
        note = "\n\n> Cut here: the step summary is limited to 1 MiB. See index.html and junit.xml.\n".encode()
        keep = room - len(note)
        if keep <= 0:
            return False
        data = data[:keep].decode("utf-8", errors="ignore").encode("utf-8") + note
    with open(target, "ab") as f:
        f.write(data)
    return True
