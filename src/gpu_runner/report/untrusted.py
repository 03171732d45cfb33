"""Reading files the code under test wrote (an entry's results), never through a symbolic link.

A results tree comes from an artifact or a folder that a notebook filled: a link in it
(``output.html`` -> ``/etc/passwd``, or a linked folder on the way) would make the report
read, render or print a file of the machine it runs on. Every file the report reads from
results goes through :func:`read_bytes` (the file itself opened with ``O_NOFOLLOW``) after
:func:`refuse_links` has checked each folder between the results root and it with ``lstat``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def link_on_the_way(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path | None:
    """The first symbolic link among ``path`` and the folders between ``root`` and it (``root``
    itself included), or None. Without ``root`` only ``path`` itself is looked at."""
    path = Path(path)
    chain = [path]
    if root is not None:
        root = Path(root)
        try:
            rel = Path(os.path.relpath(path, root))
        except ValueError:
            rel = path
        if rel.parts and rel.parts[0] != "..":
            chain = [root] + [root.joinpath(*rel.parts[:i]) for i in range(1, len(rel.parts) + 1)]
    for p in chain:
        try:
            if stat.S_ISLNK(os.lstat(p).st_mode):
                return p
        except FileNotFoundError:
            return None
    return None


def refuse_links(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> None:
    """ValueError when ``path`` or a folder between ``root`` and it is a symbolic link."""
    link = link_on_the_way(path, root)
    if link is not None:
        raise ValueError(f"{link} is a symbolic link: results are read only from plain files and folders")


def read_bytes(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> bytes:
    """The bytes of ``path``, a plain file reached through no symbolic link (ValueError otherwise;
    OSError as ``open`` raises it)."""
    refuse_links(path, root)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link: results are read only from plain files") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path} is not a plain file")
        return f.read()


def read_text(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> str:
    return read_bytes(path, root).decode("utf-8")
