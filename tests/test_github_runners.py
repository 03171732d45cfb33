"""The runner API client (PyGithub) and the Compute client against the stand-ins, in process:
request bodies the published descriptions reject are rejected, pagination, secrets kept out
of reprs, and error classification."""

from __future__ import annotations

import pytest
from standins.compute import ComputeStandIn
from standins.github import GitHubStandIn, github_standin
from standins.schemas import compute_validator, problems

from gpu_runner.cloud.base import CapacityError, CloudError, QuotaError, VmRequest
from gpu_runner.cloud.gce import classify
from gpu_runner.errors import InfraError
from gpu_runner.github.client import client
from gpu_runner.github.runners import Runners


@pytest.fixture
def gh(monkeypatch: pytest.MonkeyPatch):
    yield from github_standin(monkeypatch, "octo-org/runtime")


def test_jit_runner_round_trip_and_secret_repr(gh: GitHubStandIn) -> None:
    runners = Runners(client(), "octo-org/runtime")
    jit = runners.create_jit("gpu-runner-1-1-a--b", ["gpu-runner-1-1-a--b"])
    assert jit.encoded_jit_config in gh.secrets
    assert jit.encoded_jit_config not in repr(jit) and "<secret>" in repr(jit)
    assert runners.find("gpu-runner-1-1-a--b").status == "offline"
    gh.runner_connects(jit.encoded_jit_config)
    assert runners.get(jit.runner.id).status == "online"
    assert runners.delete(jit.runner.id) is True
    assert runners.delete(jit.runner.id) is False  # already gone
    assert runners.get(jit.runner.id) is None


def test_a_body_the_openapi_description_rejects_is_refused(gh: GitHubStandIn) -> None:
    runners = Runners(client(), "octo-org/runtime")
    with pytest.raises(InfraError, match="422"):
        runners.create_jit("x", [])  # labels: minItems 1
    assert gh.rejected and gh.count() == 0


def test_listing_follows_pages(gh: GitHubStandIn) -> None:
    for i in range(130):
        gh.add_runner(f"gpu-runner-9-1-e{i:03d}")
    gh.add_runner("someone-else")
    names = [r.name for r in Runners(client(), "octo-org/runtime").list("gpu-runner-")]
    assert len(names) == 130 and gh.calls["runners.list"] == 2


def test_registration_token_is_created(gh: GitHubStandIn) -> None:
    tok = Runners(client(), "octo-org/runtime").registration_token()
    assert tok in gh.secrets


def test_compute_standin_is_strict() -> None:
    v = compute_validator("Instance", "compute.instances.insert")
    assert problems(v, {"name": "ok-name", "scheduling": {"maxRunDuration": {"seconds": "7200"}}}) == []
    assert problems(v, {"name": "ok", "scheduling": {"maxRunDuration": {"seconds": 7200}}}) == []
    assert problems(v, {"name": "Bad_Name"})  # the documented name pattern
    assert problems(v, {"name": "ok", "scheduling": {"provisioningModel": "CHEAP"}})  # enum
    assert problems(v, {"name": "ok", "bogus": 1})  # unknown field
    assert problems(v, {"machineType": "x"})  # name is required for insert


def test_the_real_client_gets_a_400_for_a_rejected_body(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpu_runner.cloud.gce import GceProvider
    from gpu_runner.plan import GceSpec

    with ComputeStandIn() as c:
        monkeypatch.setenv("GPU_RUNNER_COMPUTE_EMULATOR_HOST", c.address)
        spec = GceSpec(project="p", machine_type="g2-standard-8", accelerator_type="nvidia-l4", accelerator_count=1,
                       attach_accelerators=False, zones=["us-central1-a"], provisioning_models=["SPOT"],
                       source_image="projects/x/global/images/family/y", disk_size_gb=50, disk_type="pd-ssd",
                       max_run_duration_s=600, network=None, subnetwork=None, external_ip=False,
                       service_account=None, scopes=None, labels={})
        req = VmRequest(name="gpu-runner-1-1-x", project="p", spec=spec, labels={"gpu-runner": "1"}, metadata={})
        with pytest.raises(CloudError) as e:
            GceProvider().create(req, "us-central1-a", "CHEAP")
        assert not isinstance(e.value, CapacityError) and "provisioningModel" in str(e.value)
        assert c.count() == 0
        inst = GceProvider().create(req, "us-central1-a", "SPOT")
        assert inst.zone == "us-central1-a" and c.count() == 1
        nic = c.instances[("p", "us-central1-a", "gpu-runner-1-1-x")]["networkInterfaces"][0]
        assert nic == {"network": "global/networks/default"}  # no external IP asked for


@pytest.mark.parametrize("code", ["ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                                  "RESOURCE_NOT_READY", "UNSUPPORTED_OPERATION"])
def test_capacity_codes_move_to_the_next_zone(code: str) -> None:
    assert isinstance(classify([{"code": code, "message": "m"}], "us-east1-c", "create"), CapacityError)


def test_quota_named_from_the_message_when_there_are_no_details() -> None:
    e = classify([{"code": "QUOTA_EXCEEDED", "message": "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 1.0 globally."}],
                 "europe-west4-a", "create")
    assert isinstance(e, QuotaError) and "GPUS_ALL_REGIONS" in str(e) and e.is_global  # it counts every region
    assert "exceeded globally (limit 1)" in str(e) and "europe-west4" not in str(e)
    e = classify([{"code": "QUOTA_EXCEEDED", "message": "Quota 'NVIDIA_L4_GPUS' exceeded.  Limit: 0.0 in region "
                   "us-central1."}], "europe-west4-a", "create")
    assert isinstance(e, QuotaError) and e.region == "us-central1" and e.metric == "NVIDIA_L4_GPUS"


def test_who_may_approve_and_taking_an_approval_back(gh: GitHubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The collaborator-permission and issue-label calls through PyGithub: write and admin approve,
    maintain reads as write, triage as read; a user who is no collaborator is a 404 (none). The label
    (with its ':') comes off once; a token that may not is an infrastructure error naming the permission."""
    from gpu_runner.github.approval import Approvals

    gh.permissions = {"maint": "write", "boss": "admin", "triage-user": "read"}
    gh.pr_labels = {12: ["gpu-runner:approved", "bug"]}
    a = Approvals(client(), "octo-org/runtime")
    assert [a.may_approve(u) for u in ("maint", "boss", "triage-user", "nobody")] == [True, True, False, False]
    assert a.permission("nobody") == "none"
    assert a.revoke(12, "gpu-runner:approved") is True and gh.pr_labels[12] == ["bug"]
    assert a.revoke(12, "gpu-runner:approved") is False
    assert not gh.rejected
    monkeypatch.setenv("GITHUB_TOKEN", "a-token-it-does-not-know")
    with pytest.raises(InfraError, match="401 Bad credentials.*Pull requests: write"):
        Approvals(client(), "octo-org/runtime").revoke(12, "bug")
