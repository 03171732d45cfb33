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
