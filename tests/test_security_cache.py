"""No job that holds a secret executes what a cache restored.

Any step of any job may write the repository's Actions cache: the run job's steps (the notebook
among them, which runs as the job's user) can read the job's ACTIONS_RUNTIME_TOKEN, and a cache
entry, once written, is restored by key to later jobs of the same branch scope ("Access
restrictions provide cache isolation and security by creating a logical boundary between
different branches or tags", and a workflow run can restore caches created in the current branch or
the default branch: https://docs.github.com/en/actions/writing-workflows/choosing-what-your-workflow-does/caching-dependencies-to-speed-up-workflows#restrictions-for-accessing-a-cache).
So the action restores its cache only in run and check (the code under test's own jobs, with no
secret); every other mode skips the cache step and installs from fresh, empty folders, fetching uv
anew, so a uv planted in the cache path is never run where cloud credentials and tokens are."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECRET_MODES = ["plan", "start", "stop", "janitor", "revoke-approval", "baseline", "report", "comment"]


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.mark.parametrize("mode", SECRET_MODES + ["run", "check"])
def test_only_the_code_under_tests_own_modes_restore_the_cache(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    out.write_text("")
    env = {"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(out), "GITHUB_ACTION_PATH": str(REPO),
           "RUNNER_TEMP": str(tmp_path), "GPU_RUNNER_MODE": mode}
    r = subprocess.run([str(REPO / ".github/scripts/action-key.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _outputs(out)["cache"] == ("true" if mode in ("run", "check") else "false")


def _install(tmp_path: Path, trusted: bool) -> tuple[subprocess.CompletedProcess[str], Path]:
    """action-install.sh as the action runs it, with a fake uv planted where a restored cache puts it."""
    cache = tmp_path / "pip-cache"
    marker = tmp_path / "planted-uv-ran"
    uv = cache / "uv-tool" / "bin" / "uv"
    uv.parent.mkdir(parents=True)
    uv.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    uv.chmod(0o755)
    nowhere = tmp_path / "no-index"
    nowhere.mkdir()
    out = tmp_path / "out"
    out.write_text("")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GITHUB_OUTPUT": str(out),
           "GITHUB_ACTION_PATH": str(REPO), "RUNNER_TEMP": str(tmp_path), "GPU_RUNNER_VENV": str(tmp_path / "venv"),
           "GPU_RUNNER_STAMP": "test", "GPU_RUNNER_EXTRAS": "", "GPU_RUNNER_INSTALLER": "uv",
           "GPU_RUNNER_CACHE_TRUSTED": "true" if trusted else "false", "PIP_CACHE_DIR": str(cache),
           # no index: nothing is fetched here (the install itself fails, which is not what is tested)
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(nowhere), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    r = subprocess.run([str(REPO / ".github/scripts/action-install.sh")], env=env, capture_output=True, text=True,
                       timeout=300)
    return r, marker


def test_a_uv_planted_in_the_cache_is_not_run_by_a_mode_that_holds_secrets(tmp_path: Path) -> None:
    r, marker = _install(tmp_path, trusted=False)
    assert not marker.exists(), "the planted uv ran in a job that holds secrets\n" + r.stdout + r.stderr


def test_the_run_mode_still_uses_its_warm_cache(tmp_path: Path) -> None:
    """The same planted file is what a warm cache holds for run and check (no secret there): used."""
    _r, marker = _install(tmp_path, trusted=True)
    assert marker.exists()
