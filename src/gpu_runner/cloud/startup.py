"""Render the VM startup script (``startup.sh``) for one entry."""

from __future__ import annotations

import shlex
from importlib import resources

from ..github.releases import MIN_RUNNER_VERSION

# No runner version is named here: ``start`` resolves the current release (or a pin) each time
# (gpu_runner.github.releases), because GitHub stops giving jobs to a runner a month behind.
HEALTH_TRIES = 30
HEALTH_WAIT_S = 10
HOLD_GRACE_S = 900
"""With a debug hold: how long after its job the VM waits for stop to say "hold" (then it only waits to be deleted)."""
HOLD_POLL_S = 10
IDLE_TIMEOUT_S = 15 * 60
IDLE_POLL_S = 5


def template() -> str:
    return resources.files(__package__).joinpath("startup.sh").read_text(encoding="utf-8")


def render(*, expected_gpus: int, runner_version: str = "", runner_sha256: str = "",
           health_tries: int = HEALTH_TRIES, health_wait_s: float = HEALTH_WAIT_S, self_delete: bool = False,
           docker: bool = False, hold_s: int = 0, hold_grace_s: int = HOLD_GRACE_S,
           hold_poll_s: float = HOLD_POLL_S, idle_timeout_s: float = IDLE_TIMEOUT_S,
           idle_poll_s: float = IDLE_POLL_S) -> str:
    """The startup script with its settings filled in (shell-quoted).

    ``self_delete``: the VM deletes itself after its job (it needs a service account that may);
    else it stays up, idle, until the entry's stop job deletes it, or Compute Engine at its
    maxRunDuration: it never powers itself off, because a stopped VM's termination time is
    cleared. ``docker``: the job runs in a container, so the runner's user may use Docker (which
    the script refuses on a VM with a service account). ``hold_s`` (a debug hold): after its job
    the VM waits up to ``hold_grace_s`` for stop to mark it held (metadata ``gpu-runner-hold``),
    and says when the hold ends, at most ``hold_s`` after the job. ``idle_timeout_s``: a runner
    that has not been given its job within this is stopped, and the VM waits as after a job.
    ``runner_version`` / ``runner_sha256``: the release to run (from
    :func:`gpu_runner.github.releases.resolve_runner_release`); the runner on the image is used
    only when it is at least that version (and at least MIN_RUNNER_VERSION)."""
    values = {
        "HOLD_S": str(max(0, int(hold_s))),
        "HOLD_GRACE_S": str(max(0, min(int(hold_grace_s), int(hold_s)))) if hold_s else "0",
        "HOLD_POLL_S": shlex.quote(f"{hold_poll_s:g}"),
        "SELF_DELETE": "1" if self_delete else "0",
        "RUNNER_DOCKER": "1" if docker else "0",
        "EXPECTED_GPUS": str(int(expected_gpus)),
        "RUNNER_VERSION": shlex.quote(runner_version),
        "RUNNER_SHA256": shlex.quote(runner_sha256.lower()),
        "RUNNER_MIN_VERSION": shlex.quote(MIN_RUNNER_VERSION),
        "HEALTH_TRIES": str(max(1, int(health_tries))),
        "HEALTH_WAIT_S": shlex.quote(f"{health_wait_s:g}"),
        "IDLE_TIMEOUT_S": str(max(1, int(round(idle_timeout_s)))),
        "IDLE_POLL_S": shlex.quote(f"{max(0.05, idle_poll_s):g}"),
    }
    text = template()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    if "@@" in text:  # pragma: no cover - a placeholder without a value
        raise ValueError("startup.sh: unrendered placeholder")
    return text
