"""The results folder (``--out``): one writer at a time, checked before any work, entries
replaced whole.

* **Writable first.** The folder is created and a lock file written in it before the first
  notebook or check: a read-only file system, a missing permission or a path under a file is
  a usage error (exit 2, one line), not a traceback after the work.
* **One writer.** ``OUT/.gpu-runner.lock`` is held (``flock``) by the command writing there:
  a second ``gpu-runner run``, ``check`` or ``report`` into the same folder refuses at once
  (exit 2) and names the holder (pid, host, command, since when). The lock goes with its
  process, even a SIGKILLed one: there is no stale lock to remove.
* **Entries replaced whole.** An entry is built in ``OUT/.gpu-runner-staging/<entry>/`` and,
  when its notebooks end, exchanged with ``OUT/<entry>/`` in one step (Linux
  ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames), so the folder a reader sees is
  always one whole run's: the previous results stay whole until the new ones are complete;
  a run killed half-way leaves the previous results untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from .errors import ConfigError
from .results import RESULTS_FILE

LOCK_FILE = ".gpu-runner.lock"
STAGING_DIR = ".gpu-runner-staging"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _why(e: OSError) -> str:
    if e.errno == errno.EROFS:
        return "read-only file system"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    return e.strerror or str(e)


def _under_a_file(path: Path) -> Path | None:
    """The first part of ``path`` that exists and is not a folder, if any."""
    p = Path(os.path.abspath(path))
    for part in [*reversed(p.parents), p]:
        if part.exists() and not part.is_dir():
            return part
    return None


def ensure_writable(out_dir: Path, flag: str = "--out") -> None:
    """Create ``out_dir`` and prove a file can be written in it; a :class:`ConfigError` (one
    line) naming the folder and why otherwise."""
    blocker = _under_a_file(out_dir)
    if blocker is not None:
        what = "is" if Path(os.path.abspath(blocker)) == Path(os.path.abspath(out_dir)) else "lies under"
        raise ConfigError(f"{flag} {out_dir}: {what} a file ({blocker}), not a folder; choose another {flag}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".gpu-runner-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{flag} {out_dir}: cannot write there: {_why(e)}; choose another {flag}") from None


class OutLock:
    """``flock`` on ``OUT/.gpu-runner.lock`` for the life of a command that writes to OUT."""

    def __init__(self, out_dir: Path, command: str, flag: str = "--out") -> None:
        self.out_dir = Path(out_dir)
        self.command = command
        self.flag = flag
        self.path = self.out_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> OutLock:
        ensure_writable(self.out_dir, self.flag)
        if fcntl is None:  # pragma: no cover - no flock: no lock, as before
            return self
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise ConfigError(f"{self.flag} {self.out_dir}: cannot write there: {_why(e)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise ConfigError(
                    f"{self.flag} {self.out_dir} is in use by {holder}; wait for it to end or choose another "
                    f"{self.flag}"
                ) from None
            # the holder before us may have removed the file between our open and our lock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                    "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            self._fd = fd
            return self
        raise ConfigError(f"{self.flag} {self.out_dir}: could not take {LOCK_FILE}; try again")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it: a waiter re-checks the inode
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another gpu-runner"
    return (f"gpu-runner pid {info.get('pid')} on {info.get('host', '?')} "
            f"(`gpu-runner {info.get('command', '?')}`, since {info.get('since', '?')})")


# -- entries replaced whole ---------------------------------------------------------------------
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2). False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def is_ours(folder: Path) -> bool:
    """Empty, or a gpu-runner entry folder (results.json, notebooks/ or checks/ inside)."""
    return not any(folder.iterdir()) or any((folder / n).exists() for n in (RESULTS_FILE, "notebooks", "checks"))


class EntryFolder:
    """Where one entry's results are built (``staging``) and where they end up (``final``)."""

    def __init__(self, out_dir: Path, entry_id: str) -> None:
        self.out_dir = Path(out_dir)
        self.final = self.out_dir / entry_id
        self.staging = self.out_dir / STAGING_DIR / entry_id
        self.committed = False

    def prepare(self) -> Path:
        """Refuse a final folder that is not ours; start the staging folder afresh. Returns it."""
        if self.final.exists() or self.final.is_symlink():
            if self.final.is_symlink() or not self.final.is_dir():
                raise ConfigError(f"{self.final} exists and is not a folder")
            if not is_ours(self.final):
                raise ConfigError(f"{self.final} is not empty and holds no gpu-runner results; choose another --out")
        if self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        return self.staging

    def commit(self) -> Path:
        """Put the staging folder in place of the final one, in one step where the OS allows."""
        if self.committed:
            return self.final
        if self.final.exists():
            if _exchange(self.staging, self.final):
                shutil.rmtree(self.staging, ignore_errors=True)  # now the previous results
            else:
                old = self.staging.with_name(self.staging.name + ".previous")
                shutil.rmtree(old, ignore_errors=True)
                os.rename(self.final, old)
                os.rename(self.staging, self.final)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.staging, self.final)
        self.committed = True
        with contextlib.suppress(OSError):
            (self.out_dir / STAGING_DIR).rmdir()  # only when empty
        return self.final


def clean_staging(out_dir: Path) -> None:
    """What a killed run left in staging (called with the lock held: no one else writes there)."""
    shutil.rmtree(Path(out_dir) / STAGING_DIR, ignore_errors=True)
