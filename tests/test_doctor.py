"""``gpu-runner doctor`` through the real command line, google-cloud-compute,
google-cloud-resource-manager and PyGithub, against the Compute Engine and GitHub stand-ins: a
clean project gives only ✓ (exit 0); each thing a start would trip over gives its ✗ with a
one-line fix (exit 1); with no credentials at all it says what it could not check (?) and exits
non-zero, never with a traceback.

The stand-ins answer in the published shapes (tests/fixtures/doctor-*.json) and document the
behaviour they model (standins/compute_doctor.py, standins/github_doctor.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import gpu_runner
from standins.compute import ComputeStandIn
from standins.github import GitHubStandIn

REPO_NAME = "octo-org/runtime"
MATRIX = """\
version: 1
gce:
  project: test-project
  region: us-central1
defaults:
  machine:
    zones: [a, b]
machines:
  here: {provider: local}
  l4:
    machine_type: g2-standard-8
  t4:
    machine_type: n1-standard-8
    accelerator: {type: nvidia-tesla-t4, count: 2}
    spot: never
runtimes:
  torch:
    notebooks: [nb.ipynb]
"""


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.gh = GitHubStandIn(repo=REPO_NAME).start()
        self.compute = ComputeStandIn().start()
        (tmp / "nb.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
        self.matrix = tmp / "matrix.yml"
        self.matrix.write_text(MATRIX)
        self.env = {"GPU_RUNNER_COMPUTE_EMULATOR_HOST": self.compute.address,
                    "GPU_RUNNER_RESOURCEMANAGER_EMULATOR_HOST": self.compute.address,
                    "GITHUB_API_URL": self.gh.url, "GITHUB_TOKEN": "test-token", "GITHUB_REPOSITORY": REPO_NAME,
                    "GPU_RUNNER_RETRY_BASE_S": "0.01", "GPU_RUNNER_RETRY_ATTEMPTS": "2", "GOOGLE_CLOUD_PROJECT": ""}

    def doctor(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return gpu_runner("doctor", "--matrix", str(self.matrix), *args, cwd=self.tmp, env={**self.env, **env},
                          timeout=120)

    def findings(self, *args: str) -> tuple[int, list[dict[str, Any]]]:
        r = self.doctor("--format", "json", *args)
        assert "Traceback" not in r.stderr, r.stderr
        return r.returncode, json.loads(r.stdout)["checks"]

    def stop(self) -> None:
        self.compute.stop()
        self.gh.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.stop()


def failed(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in checks if c["status"] != "pass"]


def only_failure(world: World, check: str, *args: str) -> dict[str, Any]:
    """The one ✗ the knob set, with exit 1 and its one-line fix in the table too."""
    code, checks = world.findings(*args)
    bad = failed(checks)
    assert code == 1, checks
    assert [c["check"] for c in bad] == [check], bad
    assert bad[0]["status"] == "fail" and bad[0]["fix"] and "\n" not in bad[0]["fix"]
    table = world.doctor(*args)
    assert table.returncode == 1 and "Traceback" not in table.stderr
    assert f"✗ {check}" in table.stdout and f"fix: {bad[0]['fix']}" in table.stdout
    return bad[0]


def test_a_clean_project_and_repository_give_all_checks(world: World) -> None:
    code, checks = world.findings()
    assert failed(checks) == [] and code == 0
    seen = {c["check"] for c in checks}
    assert seen >= {"credentials", "permissions", "machine family", "machine type", "accelerator type", "boot image",
                    "egress", "GPU quota", "runner admin", "runner release", "fork approval", "workflow token",
                    "approval label"}
    # on-demand and Spot quota in the region, and GPUS_ALL_REGIONS (l4: 1 on SPOT or STANDARD; t4: 2 on STANDARD)
    quotas = {c["subject"]: c["detail"] for c in checks if c["check"] == "GPU quota"}
    assert set(quotas) == {"us-central1 NVIDIA_L4_GPUS", "us-central1 PREEMPTIBLE_NVIDIA_L4_GPUS",
                           "us-central1 NVIDIA_T4_GPUS", "GPUS_ALL_REGIONS"}
    assert "≥ 3 GPUs at once" in quotas["GPUS_ALL_REGIONS"]
    # read only: nothing was created, and the calls were the read-only ones
    assert world.compute.count() == 0 and world.gh.count() == 0
    assert world.compute.calls["instances.insert"] == 0 and world.compute.calls["projects.testIamPermissions"] == 1
    r = world.doctor()
    assert r.returncode == 0 and "0 ✗, 0 ?" in r.stdout


def test_a_zone_that_does_not_offer_the_machine_type(world: World) -> None:
    """machineTypes.get answers 404 for a type the zone does not offer
    (https://cloud.google.com/compute/docs/reference/rest/v1/machineTypes/get)."""
    world.compute.not_offered.add(("us-central1-b", "g2-standard-8"))
    bad = only_failure(world, "machine type")
    assert bad["subject"] == "l4" and "not offered in us-central1-b" in bad["detail"]
    assert "take us-central1-b out of machine l4's zones" in bad["fix"]


def test_a_zone_that_does_not_offer_the_gpu(world: World) -> None:
    world.compute.not_offered |= {("us-central1-a", "nvidia-tesla-t4"), ("us-central1-b", "nvidia-tesla-t4")}
    bad = only_failure(world, "accelerator type")
    assert bad["subject"] == "t4" and "not offered in any of its zones" in bad["detail"]
    assert "gcloud compute accelerator-types list --filter=name=nvidia-tesla-t4" in bad["fix"]


@pytest.mark.parametrize("state", ["DEPRECATED", "OBSOLETE", "DELETED"])
def test_a_deprecated_image_family(world: World, state: str) -> None:
    """images.getFromFamily returns the family's image; its ``deprecated.state`` says DEPRECATED,
    OBSOLETE or DELETED (DeprecationStatus in the Compute Engine API)."""
    from gpu_runner.config import DEFAULT_BOOT_IMAGE_FAMILY

    world.matrix.write_text(MATRIX.replace("    zones: [a, b]\n", "    zones: [a, b]\n    boot_image: "
                                           "{family: common-cu124-debian-11-py310}\n"))
    world.compute.image_states["common-cu124-debian-11-py310"] = state
    code, checks = world.findings()
    bad = failed(checks)
    assert code == 1 and {c["check"] for c in bad} == {"boot image"} and len(bad) == 2  # both machines
    assert f"common-cu124-debian-11-py310 is {state}" in bad[0]["detail"]
    assert bad[0]["fix"].startswith(f"set boot_image.family to {DEFAULT_BOOT_IMAGE_FAMILY}")


def test_the_default_image_family_resolves_and_a_deprecated_default_says_upgrade(world: World) -> None:
    from gpu_runner.config import DEFAULT_BOOT_IMAGE_FAMILY

    code, checks = world.findings()
    image = [c for c in checks if c["check"] == "boot image"]
    assert code == 0 and all(DEFAULT_BOOT_IMAGE_FAMILY in c["detail"] and "gpu-runner default" in c["detail"]
                             for c in image)
    world.compute.image_states[DEFAULT_BOOT_IMAGE_FAMILY] = "DEPRECATED"
    code, checks = world.findings()
    assert code == 1 and all(c["fix"].startswith("upgrade gpu-runner") for c in failed(checks))


def test_an_image_family_that_does_not_exist(world: World) -> None:
    world.matrix.write_text(MATRIX.replace("    zones: [a, b]\n", "    zones: [a, b]\n    boot_image: "
                                           "{family: no-such-family}\n"))
    world.compute.missing_images.add("no-such-family")
    code, checks = world.findings()
    assert code == 1 and {c["check"] for c in failed(checks)} == {"boot image"}
    assert "does not resolve" in failed(checks)[0]["detail"]


def test_no_gpu_quota_in_the_region(world: World) -> None:
    world.compute.quota_limits[("us-central1", "NVIDIA_T4_GPUS")] = 0
    bad = only_failure(world, "GPU quota")
    assert bad["subject"] == "us-central1 NVIDIA_T4_GPUS" and "limit 0, the matrix may hold 2 at once" in bad["detail"]
    assert bad["fix"].startswith("ask for NVIDIA_T4_GPUS of at least 2 in us-central1")


def test_no_spot_quota_in_the_region(world: World) -> None:
    world.compute.quota_limits[("us-central1", "PREEMPTIBLE_NVIDIA_L4_GPUS")] = 0
    bad = only_failure(world, "GPU quota")
    assert bad["subject"] == "us-central1 PREEMPTIBLE_NVIDIA_L4_GPUS"
    assert bad["fix"].endswith("or set spot: never")


def test_quota_is_measured_against_max_parallel(world: World) -> None:
    """Nine l4 machines want 8 Spot GPUs at once with max-parallel 8, 2 with max-parallel 2."""
    machines = "".join(f"  l4x{i}:\n    machine_type: g2-standard-8\n" for i in range(8))
    world.matrix.write_text(MATRIX.replace("  here: {provider: local}\n", machines))
    world.compute.quota_limits[("us-central1", "PREEMPTIBLE_NVIDIA_L4_GPUS")] = 4
    bad = only_failure(world, "GPU quota")
    assert "may hold 8 at once (max-parallel 8)" in bad["detail"]
    code, checks = world.findings("--max-parallel", "2")
    assert code == 0, failed(checks)


def test_gpus_all_regions_zero(world: World) -> None:
    world.compute.quota_limits[("global", "GPUS_ALL_REGIONS")] = 0
    bad = only_failure(world, "GPU quota")
    assert bad["subject"] == "GPUS_ALL_REGIONS" and "limit 0, the matrix may hold 3 GPUs at once" in bad["detail"]
    assert bad["fix"].startswith("ask for GPUS_ALL_REGIONS of at least 3")


def test_no_external_ip_and_no_cloud_nat(world: World) -> None:
    """Without an external IP a VM reaches GitHub only through Cloud NAT on its subnet's region
    (https://cloud.google.com/nat/docs/overview); routers.list shows a router's ``nats``."""
    world.matrix.write_text(MATRIX.replace("  region: us-central1\n", "  region: us-central1\n  external_ip: false\n"))
    code, checks = world.findings()
    bad = failed(checks)
    assert code == 1 and [(c["check"], c["subject"]) for c in bad] == [("egress", "l4"), ("egress", "t4")]
    bad = bad[0]
    assert "no external IP and no Cloud NAT" in bad["detail"] and "us-central1" in bad["detail"]
    assert bad["fix"].startswith("set gce.external_ip: true, or add Cloud NAT")
    world.compute.nat_regions.add("us-central1")
    code, checks = world.findings()
    assert code == 0 and any(c["check"] == "egress" and c["detail"] == "Cloud NAT in us-central1" for c in checks)


def test_a_missing_iam_permission(world: World) -> None:
    world.compute.denied_permissions.add("compute.instances.setMetadata")
    bad = only_failure(world, "permissions")
    assert bad["detail"] == "the launcher lacks compute.instances.setMetadata"
    assert bad["fix"] == "grant it roles/compute.instanceAdmin.v1 on test-project"


def test_act_as_granted_elsewhere_is_not_a_failure(world: World) -> None:
    """iam.serviceAccounts.actAs may be granted on the service account rather than the project:
    missing at the project it is ?, not ✗."""
    world.matrix.write_text(MATRIX.replace("  region: us-central1\n", "  region: us-central1\n  service_account: "
                                           "vm@test-project.iam.gserviceaccount.com\n"))
    world.compute.denied_permissions.add("iam.serviceAccounts.actAs")
    code, checks = world.findings()
    assert code == 3 and [(c["check"], c["status"]) for c in failed(checks)] == [("permissions", "unknown")]
    world.compute.denied_permissions.add("compute.instances.setServiceAccount")
    assert only_failure(world, "permissions")["fix"].endswith("and roles/iam.serviceAccountUser on the VMs' "
                                                              "service account")


@pytest.mark.parametrize("machine,extra,check,fix", [
    ("a3-ultragpu-8g", "    spot: only\n", "boot disk", "set disk: {type: hyperdisk-balanced} on machine big"),
    ("a4-highgpu-8g", "    spot: preferred\n    disk: {type: hyperdisk-balanced}\n", "machine family",
     "set spot: only on machine big"),
    ("a3-highgpu-1g", "    spot: never\n    disk: {type: hyperdisk-balanced}\n", "machine family",
     "set spot: only on machine big"),
])
def test_machine_family_constraints_are_errors_before_start(world: World, machine: str, extra: str, check: str,
                                                            fix: str) -> None:
    """A3 Ultra, A4 take Hyperdisk only, and have no on-demand capacity (Spot, flex-start or a
    reservation); A3 High with fewer than 8 GPUs comes only as Spot or flex-start (see
    gpu_runner.doctor for the documents)."""
    world.matrix.write_text(MATRIX.replace("  here: {provider: local}\n", f"  big:\n    machine_type: {machine}\n{extra}"))
    code, checks = world.findings()
    bad = [c for c in failed(checks) if c["subject"] == "big"]
    assert code == 1 and [(c["check"], c["fix"]) for c in bad] == [(check, fix)]


def test_a_token_that_cannot_administer_runners(world: World) -> None:
    world.gh.runner_admin = False
    bad = only_failure(world, "runner admin")
    assert "403" in bad["detail"] and "Administration: read and write" in bad["fix"]


def test_fork_pull_requests_that_run_without_approval(world: World) -> None:
    world.gh.fork_approval_policy = "first_time_contributors"
    bad = only_failure(world, "fork approval")
    assert "only for first_time_contributors" in bad["detail"]
    assert "require approval for all external contributors" in bad["fix"]


def test_a_workflow_token_that_may_write(world: World) -> None:
    world.gh.workflow_permissions = "write"
    bad = only_failure(world, "workflow token")
    assert bad["detail"] == "the default GITHUB_TOKEN may write"
    world.gh.workflow_permissions, world.gh.can_approve_reviews = "read", True
    assert only_failure(world, "workflow token")["detail"] == "GitHub Actions may approve pull requests"


def test_a_missing_approval_label(world: World) -> None:
    world.gh.repo_labels.clear()
    bad = only_failure(world, "approval label")
    assert bad["fix"] == f"create it: `gh label create 'gpu-runner:approved' --repo {REPO_NAME}`"
    world.gh.repo_labels.add("ok to test")
    code, checks = world.findings("--approval-label", "ok to test")
    assert code == 0, failed(checks)


def test_a_runner_pin_github_would_refuse(world: World) -> None:
    """The runner release is resolved as start resolves it: a pin older than the oldest release GitHub
    lets register (2.329.0, https://github.com/orgs/community/discussions/194762) is a ✗ before any VM."""
    world.env.update(GPU_RUNNER_RUNNER_VERSION="2.321.0", GPU_RUNNER_RUNNER_SHA256="ab" * 32)
    bad = only_failure(world, "runner release")
    assert "2.321.0" in bad["detail"] and "2.329.0" in bad["fix"]


def test_a_runner_release_without_a_published_checksum(world: World) -> None:
    """The latest release must publish the sha256 of its linux-x64 package (asset digest or notes),
    or start refuses it: doctor says so (?) instead of a ✓."""
    world.gh.runner_release = {**world.gh.runner_release, "digest": False, "body_sha256": None}
    code, checks = world.findings()
    rel = next(c for c in checks if c["check"] == "runner release")
    assert rel["status"] == "unknown" and "no sha256" in rel["detail"], rel


def test_what_could_not_be_checked_is_not_all_holds(world: World) -> None:
    """GitHub that keeps answering 503: its checks are ?, exit 3 (not 0: nothing there was proven;
    not 1: nothing was found wrong); --allow-unknown (the reusable workflow's doctor job) exits 0."""
    world.gh.throttle = [(503, None)] * 200
    code, checks = world.findings()
    unknown = [c for c in checks if c["status"] == "unknown"]
    assert code == 3 and not [c for c in checks if c["status"] == "fail"]
    assert {c["check"] for c in unknown} == {"runner admin", "runner release", "fork approval", "workflow token",
                                             "approval label"}
    world.gh.throttle = [(503, None)] * 200
    r = world.doctor("--allow-unknown")
    assert r.returncode == 0 and "0 ✗, 5 ?" in r.stdout


def test_no_credentials_at_all_says_what_it_could_not_check(tmp_path: Path) -> None:
    """No Application Default Credentials, no project, no GitHub token or repository: every
    check is ?, with how to make it checkable, exit 3 (not 0: nothing was proven), no traceback."""
    env = {"HOME": str(tmp_path), "GOOGLE_APPLICATION_CREDENTIALS": "", "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "GOOGLE_CLOUD_PROJECT": "", "GITHUB_TOKEN": "", "GPU_RUNNER_GITHUB_TOKEN": "",
           "GPU_RUNNER_COMPUTE_EMULATOR_HOST": "", "NO_GCE_CHECK": "True"}
    r = gpu_runner("doctor", cwd=tmp_path, env=env)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "? GCP project" in r.stdout and "no GCP project" in r.stdout
    assert "? GitHub" in r.stdout and "GITHUB_REPOSITORY" in r.stdout
    assert "✓" not in r.stdout.splitlines()[0] and "0 ✓, 0 ✗, 2 ?" in r.stdout
    r = gpu_runner("doctor", "--project", "p", "--format", "json", cwd=tmp_path, env=env)
    data = json.loads(r.stdout)
    assert r.returncode == 3 and data["ok"] is False and "Traceback" not in r.stderr
    creds = next(c for c in data["checks"] if c["check"] == "credentials")
    assert creds["status"] == "unknown" and "no Google credentials" in creds["detail"]
    assert "gcloud auth application-default login" in creds["fix"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    r = gpu_runner("doctor", "--matrix", str(tmp_path / "none.yml"), cwd=tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = gpu_runner("doctor", "--max-parallel", "0", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.fixture
def flow(tmp_path: Path) -> Iterator[Any]:
    from test_workflow_e2e import World as WorkflowWorld

    w = WorkflowWorld(tmp_path)
    try:
        yield w
    finally:
        w.close()


def test_the_reusable_workflow_runs_doctor_before_any_vm_on_dispatch(flow: Any) -> None:
    """workflow_dispatch with the input doctor left empty: the doctor job runs after plan, and
    the entries wait for it; a ✗ (here: no approval label) skips every entry, so no VM starts."""
    from test_workflow_e2e import SHA, _texts

    flow.gh.repo_labels.clear()
    r = flow.runner("workflow_dispatch", {"ref": "refs/heads/main", "after": SHA})
    res = r.run_workflow()
    assert res["doctor"]["result"] == "failure" and res["entry"]["result"] == "skipped", _texts(r)
    assert flow.compute.calls["instances.insert"] == 0
    doctor = "\n".join(s.output for s in next(j for j in r.jobs if j.name == "doctor").steps)
    assert "✗ approval label" in doctor and "gh label create" in doctor


def test_a_ready_project_passes_the_workflows_doctor_and_the_entries_run(flow: Any) -> None:
    from test_workflow_e2e import SHA, _texts

    r = flow.runner("workflow_dispatch", {"ref": "refs/heads/main", "after": SHA})
    res = r.run_workflow()
    assert res["doctor"]["result"] == "success" and res["entry"]["result"] == "success", _texts(r)
    assert flow.compute.calls["instances.insert"] == 1
