"""The VM's job-started hook: the runner serves only the job `start` made it for.

A repository's self-hosted runners serve every workflow run of the repository that asks for
their labels, a fork's ``pull_request`` run included, so a job that learns (or guesses) an
entry's label could be queued for its runner first. The startup script installs a root-owned
hook (``ACTIONS_RUNNER_HOOK_JOB_STARTED``) that holds the job's GITHUB_REPOSITORY,
GITHUB_REPOSITORY_ID, GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT and GITHUB_WORKFLOW_REF to what start
recorded in the instance metadata. GitHub documents the hook
(https://docs.github.com/en/actions/hosting-your-own-runners/managing-self-hosted-runners/running-scripts-before-or-after-a-job):
the runner runs the script that variable names with ``bash -e`` before the job; the script has
the job's default variables; "If there is any other exit code [than 0], the job will not run and
will be marked as failed"; the script belongs outside the runner's application folder. A workflow
cannot set the default GITHUB_* variables itself
(https://docs.github.com/en/actions/writing-workflows/choosing-what-your-workflow-does/store-information-in-variables#default-environment-variables).

Here the real startup script runs under bash with the stubs of test_cloud_startup; its fake
``run.sh`` does what the runner does: run the hook with the job's environment, then the job only
when the hook passed."""

from __future__ import annotations

import pytest
from test_cloud_startup import NAME, PROJECT, ZONE, _states, make_vm  # noqa: F401 - make_vm is a fixture

from gpu_runner.cloud.lifecycle import HIJACK_STATE

EXPECTED = {"repository": "octo-org/runtime", "repository-id": "70135", "run-id": "4242", "run-attempt": "1",
            "workflow-ref": "octo-org/runtime/.github/workflows/gpu.yml@refs/heads/main"}
ENV_OF = {"repository": "GITHUB_REPOSITORY", "repository-id": "GITHUB_REPOSITORY_ID", "run-id": "GITHUB_RUN_ID",
          "run-attempt": "GITHUB_RUN_ATTEMPT", "workflow-ref": "GITHUB_WORKFLOW_REF"}


def _job(calls, env: dict[str, str]) -> str:
    """run.sh's part: the runner's pre-job hook with the job's environment, then the job."""
    assigns = " ".join(f"{ENV_OF[k]}='{v}'" for k, v in env.items())
    return (f'if env -i PATH="$PATH" {assigns} bash -e "$ACTIONS_RUNNER_HOOK_JOB_STARTED" > {calls}/hook.out 2>&1; '
            f'then touch {calls}/job-ran; else echo "job failed: the pre-job hook refused it"; fi')


def _vm(make_vm, job_env: dict[str, str]):
    vm = make_vm(gpus_listed=1, expected=1, run_sh=_job("CALLS", job_env), real_sleep=True)
    (vm.runner_dir / "run.sh").write_text(vm.run_sh.replace("CALLS", str(vm.calls)))
    with vm.compute.lock:
        items = vm.compute.instances[(PROJECT, ZONE, NAME)]["metadata"]["items"]
        items += [{"key": f"gpu-runner-job-{k}", "value": v} for k, v in EXPECTED.items()]
    return vm


def test_the_job_start_made_the_runner_for_runs(make_vm) -> None:
    vm = _vm(make_vm, EXPECTED)
    r = vm.run(idle_poll_s=0.1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (vm.calls / "job-ran").exists(), (vm.calls / "hook.out").read_text()
    assert HIJACK_STATE not in _states(r.stdout)
    assert "made for this job (run 4242, attempt 1)" in (vm.calls / "hook.out").read_text()


@pytest.mark.parametrize("forged", [
    {"run-id": "4243"},  # a fork's pull_request run of the same repository: another run id
    {"repository": "mallory/runtime", "repository-id": "666"},
    {"run-attempt": "2"},
    {"workflow-ref": "octo-org/runtime/.github/workflows/evil.yml@refs/pull/7/merge"},
])
def test_a_job_of_another_run_is_refused_and_the_vm_goes(make_vm, forged: dict[str, str]) -> None:
    vm = _vm(make_vm, {**EXPECTED, **forged})
    r = vm.run(idle_poll_s=0.1)
    assert not (vm.calls / "job-ran").exists(), "the foreign job ran"
    assert "hijack" in (vm.calls / "hook.out").read_text()
    states = _states(r.stdout)
    assert HIJACK_STATE in states, r.stdout + r.stderr
    # the VM goes as after any job: it waits, idle, for its delete (stop, its maxRunDuration, the
    # janitor); never a poweroff, which would clear its termination time
    assert states[states.index(HIJACK_STATE) + 1:][:1] == ["awaiting-delete"], states
    assert "poweroff" not in vm.calls_log()


def test_a_job_that_drops_its_variables_is_refused(make_vm) -> None:
    """No GITHUB_* at all (or a hook run with an empty environment) fails closed."""
    vm = _vm(make_vm, {})
    r = vm.run(idle_poll_s=0.1)
    assert not (vm.calls / "job-ran").exists()
    assert HIJACK_STATE in _states(r.stdout), r.stdout + r.stderr


def test_the_hook_is_outside_the_runner_folder(make_vm) -> None:
    vm = _vm(make_vm, EXPECTED)
    assert vm.run(idle_poll_s=0.1).returncode == 0
    hook = vm.tmp / "hook" / "job-started.sh"
    assert hook.is_file() and not hook.resolve().is_relative_to(vm.runner_dir.resolve())
    assert f"ACTIONS_RUNNER_HOOK_JOB_STARTED={hook}" in (vm.runner_dir / ".env").read_text()
    assert oct(hook.stat().st_mode & 0o777) == "0o755"
