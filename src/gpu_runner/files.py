"""Writing result files so that a reader (a report, an artifact upload) never sees half a file,
and reading paths from results so that none leads out of its folder."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any


def inside(base: str | os.PathLike[str], rel: str) -> Path:
    """``base / rel`` when ``rel`` is a relative path that stays inside ``base`` (symlinks followed);
    else ValueError. For every path a results.json names: it may come from untrusted code."""
    text = str(rel)
    parts = PurePosixPath(text).parts
    if not text or "\x00" in text or PurePosixPath(text).is_absolute() or ".." in parts:
        raise ValueError(f"{text!r} is not a relative path inside its results folder")
    root = Path(base).resolve()
    target = (root / text).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"{text!r} leads out of its results folder (through a symbolic link)")
    return Path(base) / text


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``
    (readable by all, as results are meant to be), else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n")
