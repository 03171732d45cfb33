"""start / stop / janitor through the real command line, google-cloud-compute and PyGithub,
against the Compute Engine and GitHub stand-ins. Every scenario ends with zero VMs and zero
runner registrations, and no secret in any output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import gpu_runner, local_env
from standins.compute import ComputeStandIn
from standins.github import GitHubStandIn

REPO_NAME = "octo-org/runtime"
MATRIX = """\
version: 1
gce:
  project: test-project
  region: us-central1
  labels: {team: ml}
defaults:
  machine:
    zones: [a, b, c]
    spot: preferred
    max_run_duration: 1h
    disk: {size_gb: 100, type: pd-balanced}
machines:
  here: {provider: local}
  l4:
    machine_type: g2-standard-8
    accelerator: {type: nvidia-l4, count: 1}
  t4:
    machine_type: n1-standard-8
    accelerator: {type: nvidia-tesla-t4, count: 2}
    spot: never
  a100:
    machine_type: a2-highgpu-1g
    accelerator: {type: nvidia-tesla-a100, count: 1}
    spot: only
runtimes:
  torch:
    notebooks: [nb.ipynb]
"""
L4 = "torch--l4"
REPO_ID = "70135"


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.gh = GitHubStandIn(repo=REPO_NAME).start()
        self.compute = ComputeStandIn(github=self.gh).start()
        (tmp / "nb.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
        self.matrix = tmp / "matrix.yml"
        self.matrix.write_text(MATRIX)
        self.outputs = tmp / "github_output"
        self.outputs.write_text("")
        self.env = {"GPU_RUNNER_COMPUTE_EMULATOR_HOST": self.compute.address, "GITHUB_API_URL": self.gh.url,
                    "GITHUB_TOKEN": "test-token", "GITHUB_REPOSITORY": REPO_NAME, "GITHUB_REPOSITORY_ID": REPO_ID,
                    "GITHUB_RUN_ID": "4242",
                    "GITHUB_RUN_ATTEMPT": "1", "GITHUB_OUTPUT": str(self.outputs),
                    "GPU_RUNNER_RETRY_BASE_S": "0.01", "GPU_RUNNER_RETRY_ATTEMPTS": "4",
                    "GOOGLE_CLOUD_PROJECT": "", "PYTHONUNBUFFERED": "1"}
        self.texts: list[str] = []

    def label(self, entry: str = L4, run: str = "4242", retry: int = 0) -> str:
        """The label start made for that try: the plan's with start's random part, found by its pattern
        among the VMs created and the registrations (the random part is known to nobody else)."""
        attempt = f"1r{retry}" if retry else "1"
        pattern = re.compile(rf"^gpu-runner-{run}-{attempt}-[a-z2-7]{{8}}-{re.escape(entry)}$")
        with self.compute.lock, self.gh.lock:
            names = [i[0] for i in self.compute.inserted] + [r["name"] for r in self.gh.runners.values()]
        found = [n for n in names if pattern.match(n)]
        assert found, f"no label of {entry} (run {run}, try {retry + 1}) among {names}"
        return found[-1]

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        r = gpu_runner(*args, cwd=self.tmp, env={**self.env, **env}, timeout=120)
        self.texts += [r.stdout, r.stderr]
        return r

    def start(self, entry: str = L4, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.cli("start", "--matrix", str(self.matrix), "--entry", entry, "--poll", "0.05", *extra, **env)

    def stop(self, entry: str = L4, **env: str) -> subprocess.CompletedProcess[str]:
        return self.cli("stop", "--matrix", str(self.matrix), "--entry", entry, **env)

    def outputs_dict(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.outputs.read_text().splitlines() if "=" in line)

    def assert_clean(self) -> None:
        """Zero VMs, zero registrations, no secret anywhere we wrote."""
        assert self.compute.count() == 0, list(self.compute.instances)
        assert self.gh.count() == 0, [r["name"] for r in self.gh.runners.values()]
        written = "\n".join(self.texts) + self.outputs.read_text()
        for secret in self.gh.secrets:
            for line in written.splitlines():
                if secret in line:
                    assert line.startswith("::add-mask::"), f"a secret was printed: {line[:60]}..."
        assert "test-token" not in written
        assert not self.compute.rejected and not self.gh.rejected

    def close(self) -> None:
        self.compute.stop()
        self.gh.stop()


@pytest.fixture
def world(tmp_path: Path):
    w = World(tmp_path)
    yield w
    w.close()


def test_happy_path(world: World) -> None:
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    label = world.label()
    outputs = world.outputs_dict()
    price = outputs.pop("price")  # the VM's price per hour (tests/test_cost_entries.py)
    assert outputs == {"label": label, "instance": label, "zone": "us-central1-a", "provisioning-model": "SPOT"}
    assert '"provisioning_model":"SPOT"' in price
    # the log is public: it never shows the label's random part (the run job gets it from the output)
    hidden = re.sub(r"-[a-z2-7]{8}-torch", "-********-torch", label)
    assert f"registering just-in-time runner {hidden}" in r.stdout and "is online" in r.stdout
    assert label not in r.stdout + r.stderr
    vm = world.compute.instances[("test-project", "us-central1-a", label)]
    sched = vm["scheduling"]
    assert sched["provisioningModel"] == "SPOT" and sched["onHostMaintenance"] == "TERMINATE"
    assert sched["automaticRestart"] is False and sched["instanceTerminationAction"] == "DELETE"
    assert int(sched["maxRunDuration"]["seconds"]) == 3600
    assert "guestAccelerators" not in vm  # the L4 comes with g2 machine types
    labels = vm["labels"]
    assert labels["gpu-runner"] == "1" and labels["gh-repo"] == "octo-org_runtime" and labels["gh-run-id"] == "4242"
    assert labels["gh-run-attempt"] == "1" and labels["entry"] == L4 and labels["team"] == "ml"
    assert abs(int(labels["created"]) - time.time()) < 600
    items = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
    assert items["block-project-ssh-keys"] == "true" and items["startup-script"].startswith("#!/bin/bash")
    # least privilege by default: no service account (so no token on the metadata server), and
    # the VM waits for its stop job after its job instead of deleting itself
    assert "serviceAccounts" not in vm
    assert "\nSELF_DELETE=0\n" in items["startup-script"] and "\nRUNNER_DOCKER=0\n" in items["startup-script"]
    assert items["gpu-runner-jitconfig"] in world.gh.secrets
    runner = next(iter(world.gh.runners.values()))
    assert runner["name"] == label and runner["status"] == "online"
    assert [lb["name"] for lb in runner["labels"] if lb["type"] == "custom"] == [label]
    s = world.stop()
    assert s.returncode == 0, s.stdout + s.stderr
    assert "deleted VM" in s.stdout and "removed the runner registration" in s.stdout
    world.assert_clean()
    again = world.stop()  # idempotent
    assert again.returncode == 0 and "already gone" in again.stdout
    world.assert_clean()


def _script(world: World, entry: str = L4) -> str:
    vm = world.compute.instances[("test-project", "us-central1-a", world.label(entry))]
    return next(i["value"] for i in vm["metadata"]["items"] if i["key"] == "startup-script")


def test_the_vm_installs_the_current_runner_release_with_its_published_checksum(world: World) -> None:
    """GitHub refuses to register a runner older than 2.329.0 and gives jobs only to one that
    installed each release within 30 days of its publication
    (https://github.com/orgs/community/discussions/194762), so start asks for the latest release
    of actions/runner (GET /repos/actions/runner/releases/latest, through PyGithub) and renders
    its version and the sha256 of actions-runner-linux-x64-<version>.tar.gz into the script."""
    world.gh.runner_release = {"version": "2.331.0", "sha256": "ab" * 32, "digest": True, "body_sha256": "ab" * 32}
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    script = _script(world)
    assert "\nRUNNER_VERSION=2.331.0\n" in script and f"\nRUNNER_SHA256={'ab' * 32}\n" in script
    assert world.gh.calls["releases.latest"] == 1
    assert "runner 2.331.0 (the latest release of actions/runner" in r.stdout
    assert world.stop().returncode == 0
    world.assert_clean()


@pytest.mark.parametrize("digest, body", [(False, "cd" * 32), (True, None)])
def test_the_checksum_comes_from_the_asset_digest_or_the_release_notes(world: World, digest: bool,
                                                                       body: str | None) -> None:
    """Older releases have no asset digest (null in the Release Asset schema): the notes' checksum
    (<!-- BEGIN SHA linux-x64 -->...<!-- END SHA linux-x64 -->) is used."""
    world.gh.runner_release = {"version": "2.330.0", "sha256": "cd" * 32, "digest": digest, "body_sha256": body}
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"\nRUNNER_SHA256={'cd' * 32}\n" in _script(world)
    assert world.stop().returncode == 0
    world.assert_clean()


@pytest.mark.parametrize("body, needle", [("ef" * 32, "differs from its asset's digest"),
                                          (None, "publishes no sha256")])
def test_a_release_without_a_trustworthy_checksum_is_refused(world: World, body: str | None, needle: str) -> None:
    world.gh.runner_release = {"version": "2.330.0", "sha256": "cd" * 32, "digest": body is not None,
                               "body_sha256": body}
    r = world.start()
    assert r.returncode == 3, r.stdout + r.stderr
    assert needle in r.stderr and world.compute.calls["instances.insert"] == 0
    world.assert_clean()


def test_a_pinned_runner_is_used_as_given(world: World) -> None:
    """Air-gapped images: --runner-version/--runner-sha256 (or GPU_RUNNER_RUNNER_VERSION/_SHA256,
    or the matrix's gce.runner) pin the release; GitHub is not asked for one."""
    r = world.start(L4, GPU_RUNNER_RUNNER_VERSION="2.329.0", GPU_RUNNER_RUNNER_SHA256="12" * 32)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\nRUNNER_VERSION=2.329.0\n" in _script(world) and world.gh.calls["releases.latest"] == 0
    assert world.stop().returncode == 0
    world.matrix.write_text(MATRIX.replace("  labels: {team: ml}\n", "  labels: {team: ml}\n  runner: {version: 2.330.1, "
                                           f"sha256: '{'34' * 32}'}}\n"))
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"\nRUNNER_VERSION=2.330.1\nRUNNER_SHA256={'34' * 32}\n" in _script(world)
    assert world.gh.calls["releases.latest"] == 0
    assert world.stop().returncode == 0
    world.assert_clean()


@pytest.mark.parametrize("how", ["option", "matrix"])
def test_a_pin_github_would_refuse_is_one_line_and_exit_2(world: World, how: str) -> None:
    """2.321.0 is older than 2.329.0, the oldest runner GitHub lets register: it would never come
    online, so start refuses it before registering anything."""
    if how == "option":
        r = world.start(L4, "--runner-version", "2.321.0", "--runner-sha256", "ab" * 32)
    else:
        world.matrix.write_text(MATRIX.replace("  labels: {team: ml}\n", "  labels: {team: ml}\n  runner: "
                                               f"{{version: 2.321.0, sha256: {'ab' * 32}}}\n"))
        r = world.start()
    assert r.returncode == 2, r.stdout + r.stderr
    assert "2.321.0 is older than 2.329.0" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert world.gh.total_calls() == 0 and world.compute.total_calls() == 0
    world.assert_clean()


def test_a_named_service_account_and_self_delete_reach_the_vm(world: World) -> None:
    world.matrix.write_text(MATRIX.replace("  labels: {team: ml}\n", "  labels: {team: ml}\n  service_account: "
                                           "vm@test-project.iam.gserviceaccount.com\n  self_delete: true\n"))
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    vm = world.compute.instances[("test-project", "us-central1-a", world.label())]
    assert vm["serviceAccounts"] == [{"email": "vm@test-project.iam.gserviceaccount.com",
                                      "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
    items = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
    assert "\nSELF_DELETE=1\n" in items["startup-script"]
    assert world.stop().returncode == 0
    world.assert_clean()


def test_n1_machines_attach_their_gpus_and_standard_only_never_asks_for_spot(world: World) -> None:
    r = world.start("torch--t4")
    assert r.returncode == 0, r.stdout + r.stderr
    vm = world.compute.instances[("test-project", "us-central1-a", world.label("torch--t4"))]
    assert vm["guestAccelerators"] == [{"acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4",
                                        "acceleratorCount": 2}]
    assert vm["scheduling"]["provisioningModel"] == "STANDARD"
    assert world.stop("torch--t4").returncode == 0
    world.assert_clean()


def test_stockout_in_the_first_zones_moves_on(world: World) -> None:
    world.compute.stockout_zones = {"us-central1-a", "us-central1-b"}
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.outputs_dict()["zone"] == "us-central1-c"
    assert r.stdout.count("no capacity") == 2 and "ZONE_RESOURCE_POOL_EXHAUSTED" in r.stdout
    assert world.compute.calls["instances.insert"] == 3
    assert world.stop().returncode == 0
    world.assert_clean()


def test_no_spot_anywhere_falls_back_to_standard(world: World) -> None:
    world.compute.stockout_zones = {"us-central1-a", "us-central1-b", "us-central1-c"}
    world.compute.stockout_models = {"SPOT"}
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.outputs_dict()["provisioning-model"] == "STANDARD"
    assert world.outputs_dict()["zone"] == "us-central1-a"
    assert world.stop().returncode == 0
    world.assert_clean()


def test_spot_only_with_no_capacity_fails_and_leaves_nothing(world: World) -> None:
    world.compute.stockout_zones = {"us-central1-a", "us-central1-b", "us-central1-c"}
    r = world.start("torch--a100")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "no capacity for a2-highgpu-1g in us-central1-a, -b, -c (SPOT)" in r.stderr
    assert world.compute.calls["instances.insert"] == 3
    world.assert_clean()
    assert world.stop("torch--a100").returncode == 0


TWO_REGIONS = MATRIX.replace("    machine_type: g2-standard-8\n",
                              "    machine_type: g2-standard-8\n    zones: [us-central1-a, us-central1-b, europe-west4-a]\n")


def test_a_regional_quota_skips_the_rest_of_its_region_not_the_ladder(world: World) -> None:
    """QUOTA_EXCEEDED on the insert operation, ``Quota 'NVIDIA_L4_GPUS' exceeded.  Limit: 0.0 in
    region us-central1.``: the quota counts in its region only ("Allocation quotas ... your project
    has access to", per region: https://cloud.google.com/compute/resource-usage), so another zone of
    us-central1 cannot help and europe-west4 can. No preemptible quota here, so the Spot VM counted
    against the standard quota, and STANDARD in us-central1 is not tried either."""
    world.matrix.write_text(TWO_REGIONS)
    world.compute.quota_limits = {("NVIDIA_L4_GPUS", "us-central1"): 0}
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.outputs_dict()["zone"] == "europe-west4-a"
    assert world.outputs_dict()["provisioning-model"] == "SPOT"
    assert [(z, m) for _n, z, m in world.compute.inserted] == [("europe-west4-a", "SPOT")]
    assert world.compute.calls["instances.insert"] == 2  # us-central1-a, then europe-west4-a
    assert "quota NVIDIA_L4_GPUS exceeded in region us-central1 (limit 0)" in r.stdout
    assert "skipping the rest of us-central1 for SPOT, STANDARD" in r.stdout
    assert world.stop().returncode == 0
    world.assert_clean()


def test_a_quota_in_every_zone_of_the_ladder_fails_in_one_line_naming_quota_region_and_fix(world: World) -> None:
    world.compute.quota_limits = {("NVIDIA_L4_GPUS", "us-central1"): 0}
    r = world.start()
    assert r.returncode == 3, r.stdout + r.stderr
    assert world.compute.calls["instances.insert"] == 1  # one region: its other zones cannot help
    error = world.outputs_dict()["error"]
    assert error.startswith("no VM for g2-standard-8 in us-central1-a, -b, -c (SPOT, STANDARD): quota "
                            "NVIDIA_L4_GPUS exceeded in region us-central1 (limit 0): ask for more"), error
    assert "IAM & Admin > Quotas" in error and "Traceback" not in r.stderr
    world.assert_clean()


def test_spot_has_a_quota_of_its_own_and_standard_is_tried_in_the_same_region(world: World) -> None:
    """Where the project has preemptible quota, Spot VMs count against it instead of the standard
    quota ("To prevent Spot VMs from consuming your quotas for standard VMs' CPUs, GPUs, and disks,
    consider requesting preemptible quota for Spot VMs":
    https://cloud.google.com/compute/docs/instances/create-use-spot). Its exhaustion
    (PREEMPTIBLE_NVIDIA_L4_GPUS) bars SPOT in the region, not STANDARD."""
    world.compute.quota_limits = {("PREEMPTIBLE_NVIDIA_L4_GPUS", "us-central1"): 1}
    assert world.start(L4, GITHUB_RUN_ID="1000").returncode == 0  # takes the one preemptible L4
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.outputs_dict()["provisioning-model"] == "STANDARD"
    assert world.outputs_dict()["zone"] == "us-central1-a"
    assert "quota PREEMPTIBLE_NVIDIA_L4_GPUS exceeded in region us-central1 (limit 1)" in r.stdout
    assert "or allow STANDARD" in r.stdout and "skipping the rest of us-central1 for SPOT\n" in r.stdout
    assert world.compute.calls["instances.insert"] == 3  # run 1000's; SPOT in -a; STANDARD in -a
    assert world.stop().returncode == 0 and world.stop(L4, GITHUB_RUN_ID="1000").returncode == 0
    world.assert_clean()


def test_gpus_all_regions_is_global_and_stops_the_ladder(world: World) -> None:
    """``Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally.`` (gcloud's words, e.g.
    https://github.com/fastai/course-v3/pull/165): it counts GPUs in every region, so no zone of
    any region helps, whatever the provisioning model."""
    world.matrix.write_text(TWO_REGIONS)
    world.compute.quota_limits = {("GPUS_ALL_REGIONS", None): 0}
    r = world.start()
    assert r.returncode == 3, r.stdout + r.stderr
    assert world.compute.calls["instances.insert"] == 1
    error = world.outputs_dict()["error"]
    assert "quota GPUS_ALL_REGIONS exceeded globally (limit 0)" in error and "in region" not in error
    assert "IAM & Admin > Quotas" in error
    world.assert_clean()


@pytest.mark.parametrize("reason", ["rateLimitExceeded", "userRateLimitExceeded"])
def test_403_rate_limits_are_retried_with_backoff(world: World, reason: str) -> None:
    """Compute Engine refuses a request over a rate quota with 403, reason rateLimitExceeded:
    "wait a minute then try your request again" (https://cloud.google.com/compute/api-quota).
    A 403 for a missing permission stays final (test_a_wrong_token...)."""
    world.compute.throttle = [(403, None, reason), (403, None, reason)]
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(f"403 {reason}, retrying") == 2
    assert world.stop().returncode == 0
    world.assert_clean()


def test_a_403_rate_limit_that_never_ends_says_so(world: World) -> None:
    world.compute.throttle = [(403, None)] * 50
    r = world.start()
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Rate Limit Exceeded" in r.stderr and "rate quota" in r.stderr and "roles/" not in r.stderr
    world.compute.throttle = []
    world.assert_clean()


def test_a_zone_that_does_not_offer_the_machine_type_is_skipped_for_every_model(world: World) -> None:
    """instances.insert answers 400 invalid: ``Invalid value for field 'resource.machineType':
    'zones/us-central1-f/machineTypes/g2-standard-8'. Machine type with name 'g2-standard-8' does
    not exist in zone 'us-central1-f'.`` (as reported in
    https://github.com/gruntwork-io/terratest/issues/1132): the zone is skipped, on every rung."""
    from standins.compute import OFFERED

    world.matrix.write_text(MATRIX.replace("    machine_type: g2-standard-8\n",
                                           "    machine_type: g2-standard-8\n    zones: [f, a]\n"))
    world.compute.offered = OFFERED
    world.compute.stockout_zones, world.compute.stockout_models = {"us-central1-a"}, {"SPOT"}
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert (world.outputs_dict()["zone"], world.outputs_dict()["provisioning-model"]) == ("us-central1-a", "STANDARD")
    assert "zone us-central1-f does not offer the machine type g2-standard-8" in r.stdout
    assert world.compute.calls["instances.insert"] == 3  # SPOT f, SPOT a (stockout), STANDARD a; not STANDARD f
    assert world.stop().returncode == 0
    world.assert_clean()


def test_a_zone_that_does_not_offer_the_accelerator_is_skipped(world: World) -> None:
    """N1 attaches its GPUs: ``The resource 'projects/P/zones/Z/acceleratorTypes/nvidia-tesla-t4'
    was not found`` (404 notFound; e.g. https://github.com/fastai/course-v3/pull/430)."""
    world.compute.offered = {"us-central1-a": {"machineTypes": {"n1-standard-8"}, "acceleratorTypes": set()}}
    r = world.start("torch--t4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.outputs_dict()["zone"] == "us-central1-b"
    assert "zone us-central1-a does not offer the accelerator type nvidia-tesla-t4" in r.stdout
    assert world.stop("torch--t4").returncode == 0
    world.assert_clean()


def test_no_zone_offers_it_names_the_zones(world: World) -> None:
    world.compute.offered = {z: {"machineTypes": set(), "acceleratorTypes": set()}
                             for z in ("us-central1-a", "us-central1-b", "us-central1-c")}
    r = world.start()
    assert r.returncode == 3, r.stdout + r.stderr
    assert world.outputs_dict()["error"] == ("no VM for g2-standard-8 in us-central1-a, -b, -c (SPOT, STANDARD): "
                                             "not offered in us-central1-a, us-central1-b, us-central1-c")
    assert world.compute.calls["instances.insert"] == 3
    world.assert_clean()


def test_429_with_retry_after_is_honoured(world: World) -> None:
    world.compute.throttle = [(429, 1), (429, 1)]
    world.gh.throttle = [(429, 1)]
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("429, retrying in 1.0s") == 2  # Retry-After, not the 0.01 s backoff
    assert world.stop().returncode == 0
    world.assert_clean()


def test_repeated_503_is_retried(world: World) -> None:
    world.compute.throttle = [(503, None)] * 3
    world.gh.throttle = [(503, None)] * 2
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("503, retrying") == 3
    assert world.stop().returncode == 0
    world.assert_clean()


def test_503_that_never_ends_is_an_infrastructure_failure(world: World) -> None:
    r0 = world.start()  # a VM exists; now every call fails while stop runs
    assert r0.returncode == 0
    world.compute.throttle = [(503, None)] * 50
    s = world.stop()
    assert s.returncode == 3, s.stdout + s.stderr
    assert "Traceback" not in s.stderr
    assert "503" in s.stderr
    world.compute.throttle = []
    assert world.stop().returncode == 0  # it works once the API recovers
    world.assert_clean()


def test_runner_that_never_comes_online_times_out_cleanly(world: World) -> None:
    world.compute.never_online = True
    r = world.start(L4, "--timeout", "1s")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "did not come online within 1s" in r.stderr
    assert "last serial console lines" in r.stderr and "runner-starting" in r.stderr
    world.assert_clean()


def test_gpu_health_check_failure_fails_fast(world: World) -> None:
    world.compute.health_fail = True
    r = world.start(L4, "--timeout", "10m")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "health-failed" in r.stderr and "NVIDIA-SMI has failed" in r.stderr
    assert "did not come online" not in r.stderr
    world.assert_clean()


def test_a_registration_named_after_the_plans_label_takes_nothing(world: World) -> None:
    """Someone registered a runner under the plan's (public) label: start's label is another (its
    random part), so the job never goes there; that registration is not start's to touch."""
    squatter = world.gh.add_runner("gpu-runner-4242-1-torch--l4")
    r = world.start()
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.gh.calls["runners.jitconfig"] == 1 and world.gh.count() == 2
    assert world.outputs_dict()["label"] != "gpu-runner-4242-1-torch--l4"
    assert world.stop().returncode == 0
    assert set(world.gh.runners) == {squatter}
    with world.gh.lock:
        world.gh.runners.clear()
    world.assert_clean()


def _start_in_background(world: World, *extra: str) -> subprocess.Popen[str]:
    env = local_env(world.env)
    return subprocess.Popen([sys.executable, "-m", "gpu_runner", "start", "--matrix", str(world.matrix), "--entry",
                             L4, "--poll", "0.05", *extra], cwd=world.tmp, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_vm(world: World) -> None:
    deadline = time.monotonic() + 60
    while world.compute.count() == 0:
        assert time.monotonic() < deadline, "start never created its VM"
        time.sleep(0.02)


def test_start_killed_half_way_then_stop_leaves_nothing(world: World) -> None:
    world.compute.boot_s = 3600  # the VM never finishes booting while start waits
    p = _start_in_background(world)
    _wait_for_vm(world)
    p.kill()  # no chance to clean up
    out, err = p.communicate(timeout=30)
    world.texts += [out, err]
    assert world.compute.count() == 1 and world.gh.count() == 1
    s = world.stop()
    assert s.returncode == 0, s.stdout + s.stderr
    world.assert_clean()


def test_start_cancelled_cleans_up_after_itself(world: World) -> None:
    world.compute.boot_s = 3600
    p = _start_in_background(world)
    _wait_for_vm(world)
    p.send_signal(signal.SIGINT)  # what GitHub sends first when a run is cancelled
    out, err = p.communicate(timeout=60)
    world.texts += [out, err]
    assert p.returncode == 130, out + err
    assert "failed or was cancelled" in out
    world.assert_clean()
    assert world.stop().returncode == 0


def test_spot_preemption_mid_job_is_reported_and_cleaned(world: World) -> None:
    assert world.start().returncode == 0
    world.compute.preempt(world.label())
    assert world.gh.runners[next(iter(world.gh.runners))]["status"] == "offline"
    s = world.stop()
    assert s.returncode == 0, s.stdout + s.stderr
    assert "preempted" in s.stdout and "preempted=true" in s.stdout
    assert world.outputs_dict()["preempted"] == "true"
    world.assert_clean()


def test_a_preempted_try_is_recorded_and_its_retry_runs_on_standard_under_its_own_name(world: World) -> None:
    import json

    assert world.start().returncode == 0
    started = world.outputs_dict()
    world.compute.preempt(world.label())
    rec = world.tmp / "rec"
    s = world.cli("stop", "--matrix", str(world.matrix), "--entry", L4, "--record", str(rec), "--start-result",
                  "success", "--run-result", "failure", "--start-outputs", json.dumps(started))
    assert s.returncode == 0, s.stdout + s.stderr
    assert world.outputs_dict()["retry"] == "true"
    record = json.loads((rec / "gpu-runner-try.json").read_text())
    vm = record.pop("vm")  # the preempted VM's lifetime, from its own operations (tests/test_cost_entries.py)
    assert vm["name"] == world.label() and vm["timed_by"] == "operations" and vm["provisioning_model"] == "SPOT"
    assert record == {"schema_version": 1, "entry_id": L4, "retry": 0, "label": world.label(), "start": "success",
                      "run": "failure", "error": None, "zone": "us-central1-a", "provisioning_model": "SPOT",
                      "preempted": True, "will_retry": True}
    r = world.start(L4, "--retry", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.outputs_dict()["label"] == world.label(retry=1)
    assert world.outputs_dict()["provisioning-model"] == "STANDARD"
    assert world.compute.inserted[-1] == (world.label(retry=1), "us-central1-a", "STANDARD")
    assert world.cli("stop", "--matrix", str(world.matrix), "--entry", L4, "--retry", "1", "--record", str(rec),
                     "--run-result", "success").returncode == 0
    assert world.outputs_dict()["retry"] == "false"
    assert json.loads((rec / "gpu-runner-try.json").read_text())["preempted"] is False
    world.assert_clean()


def test_a_failed_start_says_why_in_one_output_line(world: World) -> None:
    world.compute.stockout_zones = {"us-central1-a", "us-central1-b", "us-central1-c"}
    r = world.start()
    assert r.returncode == 3
    assert world.outputs_dict()["error"] == "no capacity for g2-standard-8 in us-central1-a, -b, -c (SPOT, STANDARD)"
    world.assert_clean()


def _orphan_vm(world: World, name: str, *, repo: str = "octo-org_runtime", run: str | None = None,
               attempt: str = "1", age_s: float = 0, max_run_duration_s: int | None = 3600,
               status: str = "RUNNING", repo_id: str | None = None) -> None:
    """A VM in the stand-in as some earlier start (of this or another repository) left it."""
    if repo_id is None:
        repo_id = REPO_ID if repo == "octo-org_runtime" else "99" + str(len(repo))
    labels = {"gpu-runner": "1", "gh-repo": repo, "gh-repo-id": repo_id, "gh-run-attempt": attempt,
              "created": str(int(time.time() - age_s))}
    if run is not None:
        labels["gh-run-id"] = run
    body = {"name": name, "machineType": "zones/us-central1-a/machineTypes/g2-standard-8", "labels": labels}
    if max_run_duration_s is not None:
        body["scheduling"] = {"maxRunDuration": {"seconds": str(max_run_duration_s)},
                              "instanceTerminationAction": "DELETE"}
    world.compute.insert(project="test-project", zone="us-central1-a", body=body, query={})
    with world.compute.lock:
        world.compute.instances[("test-project", "us-central1-a", name)]["status"] = status


def _names(world: World) -> tuple[set[str], set[str]]:
    with world.compute.lock:
        vms = {k[2] for k in world.compute.instances}
    return vms, {r["name"] for r in world.gh.runners.values()}


def test_janitor_removes_orphans_of_an_ended_run_and_keeps_a_live_one(world: World) -> None:
    # a live run (in progress): started normally
    assert world.start().returncode == 0
    # run 1000 has ended and left two VMs (one powered off, one still running) and registrations behind
    assert world.start("torch--t4", GITHUB_RUN_ID="1000").returncode == 0
    assert world.start(L4, GITHUB_RUN_ID="1000").returncode == 0
    world.gh.add_runner("gpu-runner-1000-1-abcdefgh-torch--gone")  # its VM is already gone
    world.gh.finished_runs.add("1000")
    with world.compute.lock:
        world.compute.instances[("test-project", "us-central1-a", world.label("torch--t4", "1000"))]["status"] = \
            "TERMINATED"
    for name in (world.label("torch--t4", "1000"), world.label(L4, "1000")):  # their VMs are done: offline
        world.gh.runner_disconnects(next(k for k, v in world.gh.jit.items() if world.gh.runners.get(v, {}).get(
            "name") == name))

    dry = world.cli("janitor", "--dry-run", "--project", "test-project")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would delete 2 VM(s) and 3 registration(s)" in dry.stdout
    assert world.compute.count() == 3 and world.gh.count() == 4

    r = world.cli("janitor", "--project", "test-project")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "workflow run 1000 (attempt 1) has ended" in r.stdout
    assert "deleted 2 VM(s) and 3 registration(s); kept 1" in r.stdout
    assert _names(world) == ({world.label()}, {world.label()})
    assert world.stop().returncode == 0
    world.assert_clean()


def test_janitor_knows_a_retrys_vm_and_runner_as_its_runs(world: World) -> None:
    """A retry after a preemption is named <attempt>r<N>: still this run's, deleted once it ended."""
    assert world.start(L4, "--retry", "1", GITHUB_RUN_ID="1000").returncode == 0
    label = world.label(L4, "1000", retry=1)
    assert _names(world) == ({label}, {label})
    kept = world.cli("janitor", "--project", "test-project")
    assert f"kept VM {label}: workflow run 1000 (attempt 1) is in progress" in kept.stdout
    world.gh.finished_runs.add("1000")
    world.compute.preempt(label)  # the VM is gone, the registration offline
    r = world.cli("janitor", "--project", "test-project")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"deleted offline runner registration {label}" in r.stdout
    world.assert_clean()


def test_janitor_spares_another_repositorys_vms_and_anything_not_named_as_ours(world: World) -> None:
    """Same project, same gpu-runner=1 label: another repository's VMs (ancient, of a run whose id
    has ended here) and VMs that only look like ours are never touched."""
    world.gh.finished_runs.update({"1000", "7"})
    _orphan_vm(world, "gpu-runner-1000-1-abcdefgh-torch--l4", repo="other-org_other", run="1000", age_s=30 * 86400)
    _orphan_vm(world, "gpu-runner-7-1-abcdefgh-torch--l4", repo="other-org_other", run="7", age_s=30 * 86400,
               max_run_duration_s=None, status="TERMINATED")
    _orphan_vm(world, "gpu-runner-box1", run="1000", age_s=30 * 86400)  # our labels, not our name pattern
    _orphan_vm(world, "gpu-runner-1000-1-abcdefgh-torch--t4", run="999", age_s=30 * 86400)  # name and labels disagree
    before = _names(world)[0]
    r = world.cli("janitor", "--max-age", "1m", "--margin", "1s", "--project", "test-project")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _names(world)[0] == before
    assert world.compute.deleted == []
    assert "left alone VM gpu-runner-box1" in r.stdout and "deleted 0 VM(s)" in r.stdout
    assert "gpu-runner-1000-1-abcdefgh-torch--l4" not in r.stdout  # another repository's VMs are not even listed
    with world.compute.lock:
        world.compute.instances.clear()


def test_janitor_spares_a_live_runs_vm_however_old(world: World) -> None:
    """A run still in progress whose VM is older than --max-age (its max_run_duration is longer than
    the janitor's age): the VM stays, and so does its runner, busy or offline between jobs."""
    _orphan_vm(world, "gpu-runner-5000-1-abcdefgh-torch--l4", run="5000", age_s=10 * 3600, max_run_duration_s=24 * 3600)
    _orphan_vm(world, "gpu-runner-5000-1-abcdefgh-torch--t4", run="5000", age_s=30 * 86400, max_run_duration_s=None,
               status="TERMINATED")
    world.gh.add_runner("gpu-runner-5000-1-abcdefgh-torch--a100")  # registered, VM not made yet
    r = world.cli("janitor", "--max-age", "1h", "--margin", "1s", "--project", "test-project")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kept VM gpu-runner-5000-1-abcdefgh-torch--l4: workflow run 5000 (attempt 1) is in progress" in r.stdout
    assert world.compute.deleted == [] and world.gh.count() == 1
    assert "deleted 0 VM(s) and 0 registration(s); kept 2" in r.stdout
    world.gh.finished_runs.add("5000")  # the run ends: now everything of it goes
    r = world.cli("janitor", "--project", "test-project")
    assert "deleted 2 VM(s) and 1 registration(s)" in r.stdout, r.stdout + r.stderr
    world.assert_clean()


def test_janitor_age_rule_uses_the_vms_own_lifetime_when_github_cannot_tell(world: World) -> None:
    """A VM of a `gpu-runner start` outside Actions (run id `local`): no run to ask about, so it
    goes once older than its own maxRunDuration plus the margin, not before."""
    _orphan_vm(world, "gpu-runner-local-1-abcdefgh-torch--l4", run="local", age_s=5 * 3600, max_run_duration_s=8 * 3600)
    _orphan_vm(world, "gpu-runner-local-1-abcdefgh-torch--t4", run="local", age_s=5 * 3600, max_run_duration_s=3600)
    r = world.cli("janitor", "--max-age", "1h", "--project", "test-project")
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.compute.deleted == ["gpu-runner-local-1-abcdefgh-torch--t4"]
    assert "past its 1.5 h lifetime and margin" in r.stdout
    with world.compute.lock:
        world.compute.instances.clear()


def test_janitor_never_removes_a_foreign_runner(world: World) -> None:
    """Offline registrations the janitor did not make: a box named gpu-runner-box1, and one of our
    name pattern that does not carry its name as its label (a hand-registered runner)."""
    world.gh.finished_runs.add("1000")
    box = world.gh.add_runner("gpu-runner-box1")
    lookalike = world.gh.add_runner("gpu-runner-1000-1-abcdefgh-torch--l4")
    with world.gh.lock:
        world.gh.runners[lookalike]["labels"] = [{"id": 1, "name": "self-hosted", "type": "read-only"},
                                                 {"id": 2, "name": "gpu", "type": "custom"}]
    theirs_too = world.gh.add_runner("my-gpu-runner-1000-1-x")
    r = world.cli("janitor", "--project", "test-project")
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(world.gh.runners) == {box, lookalike, theirs_too}
    assert "left alone runner gpu-runner-box1" in r.stdout
    with world.gh.lock:
        world.gh.runners.clear()


def test_local_entries_have_nothing_to_start_or_stop(world: World) -> None:
    r = world.start("torch--here")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no VM to start" in r.stdout
    assert world.stop("torch--here").returncode == 0
    assert world.compute.total_calls() == 0 and world.gh.total_calls() == 0


@pytest.mark.parametrize("drop, needle", [("GITHUB_TOKEN", "no GitHub token"),
                                          ("GITHUB_REPOSITORY", "GITHUB_REPOSITORY must name")])
def test_missing_settings_are_usage_errors(world: World, drop: str, needle: str) -> None:
    r = world.start(**{drop: ""})
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    world.assert_clean()


def test_a_wrong_token_is_an_infrastructure_error_that_names_the_permission(world: World) -> None:
    r = world.start(GITHUB_TOKEN="wrong")
    assert r.returncode == 3 and "Administration" in r.stderr
    world.assert_clean()


def test_secrets_are_masked_in_github_actions(world: World) -> None:
    r = world.start(GITHUB_ACTIONS="true")
    assert r.returncode == 0, r.stdout + r.stderr
    masks = [line for line in r.stdout.splitlines() if line.startswith("::add-mask::")]
    assert masks == [f"::add-mask::{world.gh.secrets[0]}"]
    assert world.stop().returncode == 0
    world.assert_clean()
