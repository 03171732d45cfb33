"""Typed errors that carry their exit code (DESIGN.md, section 4).

0 all passed; 1 something under test failed; 2 usage or configuration error;
3 infrastructure failure. ``cli.py`` is the only place that turns these into
an exit status; everything else raises.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INFRA = 3


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): for a
    message that must stay one line."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


class GpuRunnerError(Exception):
    """Base class: a message meant for a person, and the exit code it maps to."""

    exit_code = EXIT_INFRA

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(GpuRunnerError):
    """Bad input: a usage mistake, a broken matrix file, a path that matches nothing.

    ``location`` is ``FILE:LINE:COL`` when known, ``key`` the dotted key path.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, location: str | None = None, key: str | None = None) -> None:
        self.location = location
        self.key = key
        parts = [p for p in (location, key) if p]
        super().__init__(": ".join(parts + [message]) if parts else message)


class InfraError(GpuRunnerError):
    """The machinery failed (cloud, GitHub, a runner that never came online) after retries."""

    exit_code = EXIT_INFRA


EXTRAS: dict[str, tuple[str, ...]] = {
    "gce": ("google.cloud.compute_v1", "tenacity"),
    "github": ("github",),
    "pdf": ("playwright.sync_api",),
}
"""The packaging extras and the modules each brings. ``pip install gpu-runner`` alone runs and
reports notebooks on this machine; ``gce`` and ``github`` start and stop runners (and post the
comment), ``pdf`` prints PDFs. The action installs, per mode, only the extras it needs."""


def missing_extra(extra: str) -> str | None:
    """The first module of ``extra`` that cannot be imported here, or None."""
    import importlib.util

    for module in EXTRAS[extra]:
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except (ImportError, ValueError):  # a parent package is missing (or blocked)
            return module
    return None


def require_extra(extra: str, purpose: str) -> None:
    """A ConfigError (exit 2) that says how to install ``extra`` when ``purpose`` needs it."""
    module = missing_extra(extra)
    if module is not None:
        raise ConfigError(f"{purpose} needs the '{extra}' extra ({module} is not installed): "
                          f"pip install 'gpu-runner[{extra}]'")

