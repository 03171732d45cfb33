"""Which GitHub Actions runner release a VM runs: the current one, or a pin GitHub still accepts.

GitHub refuses to register a self-hosted runner older than v2.329.0, and stops giving jobs to a
runner that has not installed a new release within 30 days of its publication ("To configure or
(re)register a runner: The runner must be on version 2.329.0 or later ... To continue executing
workflow jobs: the runner must stay up to date by installing each new runner release within 30
days of its publication": https://github.com/orgs/community/discussions/194762; and "If you
disable automatic updates, you will be required to update your runner version within 30 days of
a new version being made available": https://docs.github.com/en/actions/hosting-your-own-runners/
managing-self-hosted-runners/autoscaling-with-self-hosted-runners#controlling-runner-software-
updates-on-self-hosted-runners). An ephemeral VM made from a fixed version stops working a month
after the next release, so :func:`resolve_runner_release` asks GitHub for the latest release of
actions/runner each time an entry starts (``GET /repos/actions/runner/releases/latest``), with the
sha256 GitHub publishes for its linux-x64 package (the asset's ``digest``, else the checksum the
release notes list between ``<!-- BEGIN SHA linux-x64 -->`` and ``<!-- END SHA linux-x64 -->``).

A pin (an air-gapped image whose runner is baked in, GitHub Enterprise Server, a reviewed
release) is a version with its sha256; one older than :data:`MIN_RUNNER_VERSION` is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, InfraError

MIN_RUNNER_VERSION = "2.329.0"
"""The oldest runner GitHub lets register (the one place that names it: the startup script and
the pin check read it from here)."""
RUNNER_REPOSITORY = "actions/runner"
PACKAGE = "actions-runner-linux-x64-{version}.tar.gz"
"""The linux-x64 package of a release, as its assets are named."""
VERSION_ENV = "GPU_RUNNER_RUNNER_VERSION"
SHA256_ENV = "GPU_RUNNER_RUNNER_SHA256"
VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
BODY_SHA_RE = re.compile(r"<!--\s*BEGIN SHA linux-x64\s*-->\s*([0-9a-fA-F]{64})\s*<!--\s*END SHA linux-x64\s*-->")


@dataclass(frozen=True)
class RunnerRelease:
    """One release of the runner: its version (``2.330.0``), the sha256 of its linux-x64 package,
    and where it came from (for the log)."""

    version: str
    sha256: str
    source: str

    @property
    def package(self) -> str:
        return PACKAGE.format(version=self.version)


def version_key(version: str) -> tuple[int, int, int]:
    """``2.330.0`` (or ``v2.330.0``) as a tuple that sorts; ValueError for anything else."""
    m = VERSION_RE.match(version.strip())
    if not m:
        raise ValueError(f"not a runner version (MAJOR.MINOR.PATCH, e.g. {MIN_RUNNER_VERSION}): {version!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def accepted(version: str) -> bool:
    """Whether GitHub lets a runner of this version register (at least MIN_RUNNER_VERSION)."""
    return version_key(version) >= version_key(MIN_RUNNER_VERSION)


def pinned_release(version: str, sha256: str, *, source: str = "pinned") -> RunnerRelease:
    """A pin, checked: a version GitHub accepts and a sha256 (ConfigError, one line, otherwise)."""
    try:
        version_key(version)
    except ValueError as e:
        raise ConfigError(f"runner version: {e}") from None
    version = version.strip().lstrip("v")
    if not accepted(version):
        raise ConfigError(f"runner version {version} is older than {MIN_RUNNER_VERSION}, the oldest GitHub lets "
                          f"register: pin {MIN_RUNNER_VERSION} or later, or leave the pin out to use the current release")
    if not SHA256_RE.match(sha256.strip()):
        raise ConfigError(f"runner sha256 for {version}: expected 64 hex digits, the checksum of "
                          f"{PACKAGE.format(version=version)}")
    return RunnerRelease(version=version, sha256=sha256.strip().lower(), source=source)


def pin_from(version: str | None, sha256: str | None, *, what: str) -> RunnerRelease | None:
    """A pin from one source (``what`` names it in errors), or None when it sets neither."""
    if not version and not sha256:
        return None
    if not version or not sha256:
        raise ConfigError(f"{what}: a runner version and its sha256 go together (the checksum pins the download)")
    return pinned_release(version, sha256, source=f"pinned by {what}")


def resolve_runner_release(gh: Any = None, *, pin: RunnerRelease | None = None,
                           env: Mapping[str, str] | None = None) -> RunnerRelease:
    """The runner release a VM should run.

    ``pin`` (from the command line or the matrix) wins; then ``GPU_RUNNER_RUNNER_VERSION`` with
    ``GPU_RUNNER_RUNNER_SHA256``; else the latest release of actions/runner, asked of the GitHub
    API ``gh`` talks to (a ``github.Github``; default: :func:`gpu_runner.github.client.client`).
    Raises ConfigError for a pin GitHub would refuse, InfraError when GitHub cannot say."""
    if pin is not None:
        return pin
    env = os.environ if env is None else env
    from_env = pin_from(env.get(VERSION_ENV), env.get(SHA256_ENV), what=f"{VERSION_ENV}/{SHA256_ENV}")
    if from_env is not None:
        return from_env
    if gh is None:
        from .client import client

        gh = client(env)
    return latest_release(gh)


def latest_release(gh: Any) -> RunnerRelease:
    """``GET /repos/actions/runner/releases/latest``: its version and the published sha256 of its
    linux-x64 package (the asset's ``digest`` and the release notes' checksum must agree)."""
    import requests
    from github import GithubException

    what = f"the latest release of {RUNNER_REPOSITORY}"
    try:
        rel = gh.get_repo(RUNNER_REPOSITORY).get_latest_release()
        tag, body = rel.tag_name, rel.body or ""
        assets = [(a.name, getattr(a, "digest", None)) for a in rel.assets]
    except GithubException as e:
        msg = e.data.get("message") if isinstance(e.data, dict) else str(e)
        hint = "" if e.status in (401, 403) and msg != "Not Found" else (
            f" (where {RUNNER_REPOSITORY} cannot be read, e.g. GitHub Enterprise Server, pin a runner: "
            "--runner-version and --runner-sha256)")
        raise InfraError(f"GitHub: {what}: {e.status} {msg}{hint}") from None
    except requests.RequestException as e:
        raise InfraError(f"GitHub: {what}: {e}") from None
    try:
        version = ".".join(str(n) for n in version_key(tag))
    except ValueError as e:
        raise InfraError(f"GitHub: {what}: tag {tag!r}: {e}") from None
    package = PACKAGE.format(version=version)
    digest = next((d for n, d in assets if n == package), None)
    from_digest = digest.split(":", 1)[1].lower() if digest and digest.startswith("sha256:") else None
    m = BODY_SHA_RE.search(body)
    from_body = m.group(1).lower() if m else None
    if from_digest and from_body and from_digest != from_body:
        raise InfraError(f"GitHub: {what} ({version}): the sha256 of {package} in its notes ({from_body}) differs "
                         f"from its asset's digest ({from_digest}); refusing it")
    sha = from_digest or from_body
    if not sha:
        raise InfraError(f"GitHub: {what} ({version}) publishes no sha256 for {package}; pin a runner "
                         "(--runner-version and --runner-sha256)")
    if not accepted(version):
        raise InfraError(f"GitHub: {what} is {version}, older than {MIN_RUNNER_VERSION}")
    return RunnerRelease(version=version, sha256=sha, source=f"the latest release of {RUNNER_REPOSITORY}")
