"""What each entry's VMs cost and how long they lived, and a failed entry's VM held for a look:
start and stop through google-cloud-compute and PyGithub against the Compute Engine, GitHub and
Billing Catalog stand-ins; the VM's own timer in the startup script; the janitor; the reports."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import gpu_runner
from standins.billing import AS_OF, PRICES, BillingStandIn
from standins.compute import ComputeStandIn
from standins.github import GitHubStandIn

from gpu_runner.cloud import lifecycle
from gpu_runner.timestamps import epoch_of
from gpu_runner.cost import catalog
from gpu_runner.cost.prices import PriceBook, Shape, table
from gpu_runner.cost.usage import cost_of, price_from_dict, vm_use
from gpu_runner.plan import find_entry
from gpu_runner.results import EntryInfo, EntryResult

REPO = "octo-org/runtime"
PROJECT = "test-project"
MATRIX = """\
version: 1
gce: {project: test-project, region: us-central1}
defaults:
  machine: {zones: [a, b], max_run_duration: 2h, disk: {size_gb: 100, type: pd-balanced}}
machines:
  l4: {machine_type: g2-standard-8, spot: preferred}
  t4: {machine_type: n1-standard-8, accelerator: {type: nvidia-tesla-t4, count: 1}, spot: never}
  own: {machine_type: g2-standard-8, spot: only, price_per_hour: {spot: 0.5, standard: 1.5}}
  held: {machine_type: g2-standard-8, spot: never, debug_hold: 30m}
runtimes:
  torch: {notebooks: [nb.ipynb]}
"""


class World:
    """The stand-ins, a matrix, and the environment the start and stop jobs have. ``began`` is
    when the test's first start began (real time): a VM cannot have lived longer than the stand-in's
    clock was advanced plus the real time since."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.gh = GitHubStandIn(repo=REPO).start()
        self.compute = ComputeStandIn(github=self.gh).start()
        (tmp / "nb.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
        self.matrix = tmp / "matrix.yml"
        self.matrix.write_text(MATRIX)
        self.outputs = tmp / "github_output"
        self.env = {"GPU_RUNNER_COMPUTE_EMULATOR_HOST": self.compute.address, "GITHUB_API_URL": self.gh.url,
                    "GITHUB_TOKEN": "test-token", "GITHUB_REPOSITORY": REPO, "GITHUB_REPOSITORY_ID": "70135",
                    "GITHUB_RUN_ID": "4242",
                    "GITHUB_RUN_ATTEMPT": "1", "GITHUB_OUTPUT": str(self.outputs),
                    "GPU_RUNNER_RETRY_BASE_S": "0.01", "GPU_RUNNER_RETRY_ATTEMPTS": "4", "GOOGLE_CLOUD_PROJECT": ""}
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)
        self.logs: list[str] = []
        self.began = time.monotonic()

    def lived(self, seconds: float, advanced: float) -> bool:
        """``seconds`` is what the VM lived: at least the stand-in's ``advanced`` clock, at most that
        plus the real time this test has taken."""
        return advanced <= seconds <= advanced + (time.monotonic() - self.began) + 1

    def start(self, entry: str, **env: str) -> dict[str, str]:
        self.outputs.write_text("")
        r = gpu_runner("start", "--matrix", str(self.matrix), "--entry", entry, "--poll", "0.05", cwd=self.tmp,
                       env={**self.env, **env})
        assert r.returncode == 0, r.stdout + r.stderr
        self.logs.append(r.stdout)
        return dict(line.split("=", 1) for line in self.outputs.read_text().splitlines() if "=" in line)

    def ctx(self) -> lifecycle.Context:
        return lifecycle.make_context(PROJECT, log=self.logs.append)

    def entry(self, entry_id: str):
        return find_entry(self.matrix, entry_id)

    def vm(self, name: str) -> dict:
        return next(i for k, i in self.compute.instances.items() if k[2] == name)

    def close(self) -> None:
        self.compute.stop()
        self.gh.stop()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    catalog.forget()
    w = World(tmp_path, monkeypatch)
    yield w
    w.close()
    catalog.forget()


def table_hourly(machine_type: str, acc: str | None, n: int, model: str, disk_gb: int = 100,
                 disk: str = "pd-balanced") -> tuple[float, float]:
    """(machine and GPU per hour, disk per hour) from the shipped table, by hand."""
    t = table()
    vcpus, gib = t["machine_types"][machine_type]
    fam = t["machine_families"][machine_type.split("-")[0]][model]
    run = vcpus * fam["vcpu_hour"] + gib * fam["gib_hour"] + (t["gpus"][acc][model] * n if acc else 0)
    return run, disk_gb * t["disks_gib_month"][disk] / 730


def use_of(world: World, entry_id: str, outputs: dict[str, str], stopped: lifecycle.Stopped, retry: int = 0):
    """What the stop job records: the VM as stop saw it, priced as start priced it."""
    seen = stopped.vm
    assert seen is not None
    price = price_from_dict(json.loads(outputs["price"]))
    return vm_use(name=seen.name, spec=world.entry(entry_id).gce, zone=seen.zone or outputs["zone"],
                  provisioning_model=seen.provisioning_model or outputs["provisioning-model"],
                  created_at=seen.created_at, deleted_at=seen.deleted_at, last_stop_at=seen.last_stop_at,
                  timed_by=seen.timed_by, price=price, retry=retry)


# --------------------------------------------------------------------------- lifetimes and costs


@pytest.mark.parametrize("entry, model", [("torch--t4", "STANDARD"), ("torch--l4", "SPOT")])
def test_a_standard_and_a_spot_entry_cost_their_lifetime_at_the_tables_prices(world: World, entry: str,
                                                                               model: str) -> None:
    out = world.start(entry)
    assert out["provisioning-model"] == model
    price = json.loads(out["price"])
    assert price["source"] == "table" and price["as_of"] == table()["as_of"] and price["estimate"] is True
    assert f"price of this VM: ${price['usd_per_hour']:.3f}/h ({model}, gpu-runner's price table" in world.logs[-1]
    # the VM lives 1 h 50 m on Compute Engine's clock (at 2 h, its maxRunDuration, Compute Engine deletes it)
    world.compute.advance(6600)
    stopped = lifecycle.stop(world.ctx(), out["label"])
    use = use_of(world, entry, out, stopped)
    assert use.timed_by == "stop" and world.lived(use.lifetime_s, 6600)
    assert use.running_s == use.lifetime_s  # it never powered off
    acc = "nvidia-tesla-t4" if entry == "torch--t4" else "nvidia-l4"
    run, disk = table_hourly("n1-standard-8" if entry == "torch--t4" else "g2-standard-8", acc, 1, model)
    assert use.usd_per_hour == pytest.approx(run + disk, abs=1e-5)
    assert use.usd == pytest.approx((run + disk) * use.lifetime_s / 3600, abs=2e-5)
    assert (use.machine_type, use.accelerator_type, use.accelerator_count, use.provisioning_model, use.region) == (
        "n1-standard-8" if entry == "torch--t4" else "g2-standard-8", acc, 1, model, "us-central1")
    assert (use.disk_type, use.disk_size_gb, use.price_source) == ("pd-balanced", 100, "table")
    assert world.compute.count() == 0


@pytest.mark.parametrize("model", ["STANDARD", "SPOT"])
def test_an_entry_priced_by_the_billing_catalog(world: World, monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    with BillingStandIn() as billing:
        entry = "torch--t4" if model == "STANDARD" else "torch--l4"
        out = world.start(entry, GPU_RUNNER_BILLING_EMULATOR_HOST=billing.address)
        assert billing.calls["services.skus.list"] >= 2  # the start job read the catalog, page by page
    price = json.loads(out["price"])
    assert (price["source"], price["as_of"], price["provisioning_model"]) == ("billing-catalog", AS_OF, model)
    world.compute.advance(3600)
    use = use_of(world, entry, out, lifecycle.stop(world.ctx(), out["label"]))
    mt, fam, acc = (("n1-standard-8", "n1", "nvidia-tesla-t4") if entry == "torch--t4"
                    else ("g2-standard-8", "g2", "nvidia-l4"))
    vcpus, gib = table()["machine_types"][mt]
    r = "us-central1"
    expected = (vcpus * PRICES[(f"{fam} core", r, model)] + gib * PRICES[(f"{fam} ram", r, model)]
                + PRICES[(acc, r, model)] + 100 * PRICES[("pd-balanced disk", r, "STANDARD")] / 730)
    assert use.usd_per_hour == pytest.approx(expected, abs=1e-5) and use.price_source == "billing-catalog"
    assert use.usd == pytest.approx(expected * use.lifetime_s / 3600, abs=2e-5)


@pytest.mark.parametrize("model, usd_per_hour", [("SPOT", 0.5), ("STANDARD", 1.5)])
def test_an_entry_priced_by_the_matrix(world: World, model: str, usd_per_hour: float) -> None:
    world.matrix.write_text(MATRIX.replace("own: {machine_type: g2-standard-8, spot: only,",
                                           "own: {machine_type: g2-standard-8, spot: preferred,"))
    if model == "STANDARD":  # no Spot capacity in any zone: the ladder's STANDARD rung
        world.compute.stockout_zones = {"us-central1-a", "us-central1-b"}
        world.compute.stockout_models = {"SPOT"}
    out = world.start("torch--own")
    price = json.loads(out["price"])
    assert (out["provisioning-model"], price["usd_per_hour"], price["source"]) == (model, usd_per_hour, "matrix")
    world.compute.advance(1800)
    use = use_of(world, "torch--own", out, lifecycle.stop(world.ctx(), out["label"]))
    assert use.price_source == "matrix" and use.parts_usd_per_hour == {} and use.provisioning_model == model
    assert use.usd == pytest.approx(usd_per_hour * use.lifetime_s / 3600, abs=2e-5)
    assert world.lived(use.lifetime_s, 1800)


def test_a_vm_that_powered_off_after_its_job_pays_only_its_disk_until_stop(world: World) -> None:
    out = world.start("torch--t4")
    world.compute.advance(3600)
    world.compute.power_off(out["label"])  # a host maintenance event stops it (onHostMaintenance: TERMINATE)
    world.compute.advance(1800)  # stop comes half an hour later
    use = use_of(world, "torch--t4", out, lifecycle.stop(world.ctx(), out["label"]))
    assert world.lived(use.running_s, 3600) and world.lived(use.lifetime_s - use.running_s, 1800)
    run, disk = table_hourly("n1-standard-8", "nvidia-tesla-t4", 1, "STANDARD")
    assert use.usd == pytest.approx(run * use.running_s / 3600 + disk * use.lifetime_s / 3600, abs=2e-5)


def test_a_preempted_vm_is_timed_by_its_own_operations_and_a_retry_counts_both(world: World) -> None:
    first = world.start("torch--l4")
    assert first["provisioning-model"] == "SPOT"
    world.compute.advance(1200)
    world.compute.preempt(first["label"])  # Compute Engine takes the Spot VM back after 20 minutes
    world.compute.advance(600)  # stop runs ten minutes later and finds it gone
    entry = world.entry("torch--l4")
    stopped = lifecycle.stop(world.ctx(), first["label"], zones=entry.gce.zones)
    assert stopped.preempted and stopped.vm is not None and stopped.vm.timed_by == "operations"
    try1 = use_of(world, "torch--l4", first, stopped)
    assert world.lived(try1.lifetime_s, 1200) and try1.lifetime_s < 1800  # created -> preempted, not -> stop
    # the retry, on STANDARD, under its own name
    world.matrix.write_text(MATRIX.replace("l4: {machine_type: g2-standard-8, spot: preferred}",
                                           "l4: {machine_type: g2-standard-8, spot: never}"))
    second = world.start("torch--l4")
    world.compute.advance(2400)
    try2 = use_of(world, "torch--l4", second, lifecycle.stop(world.ctx(), second["label"]), retry=1)
    cost = cost_of([try1, try2])
    assert cost.usd == pytest.approx(try1.usd + try2.usd) and len(cost.vms) == 2
    assert try1.provisioning_model == "SPOT" and try2.provisioning_model == "STANDARD"
    spot_run, disk = table_hourly("g2-standard-8", "nvidia-l4", 1, "SPOT")
    std_run, _ = table_hourly("g2-standard-8", "nvidia-l4", 1, "STANDARD")
    assert cost.usd == pytest.approx((spot_run + disk) * try1.lifetime_s / 3600
                                     + (std_run + disk) * try2.lifetime_s / 3600, abs=5e-5)
    # the reports show both tries and the sum
    from gpu_runner.report.cost import totals_line
    from gpu_runner.report.summary import render_summary

    result = EntryResult(entry=EntryInfo(id="torch--l4", runtime="torch", machine="l4", provider="gce",
                                         ran_locally=False), status="passed", started_at="", finished_at="",
                         duration_s=1.0, cost=cost)
    md = render_summary([result])
    assert "### What it cost" in md and "(try 1)" in md and "(try 2)" in md and "SPOT" in md and "STANDARD" in md
    assert totals_line([result]) in md.replace("\\", "")
    assert EntryResult.from_dict(json.loads(json.dumps(result.to_dict()))).cost == cost


# --------------------------------------------------------------------------- a failed VM held for a look


def test_a_failed_entry_is_held_and_a_passing_one_is_not(world: World) -> None:
    entry = world.entry("torch--held")
    assert entry.gce.debug_hold_s == 1800
    out = world.start("torch--held")
    vm = world.vm(out["label"])
    assert int(vm["scheduling"]["maxRunDuration"]["seconds"]) == 7200 + 1800  # its hard lifetime covers the hold
    script = {i["key"]: i["value"] for i in vm["metadata"]["items"]}["startup-script"]
    assert "\nHOLD_S=1800\n" in script
    t0 = time.time()
    stopped = lifecycle.stop(world.ctx(), out["label"], hold_s=entry.gce.debug_hold_s, now=t0)
    assert stopped.held is not None and not stopped.deleted_vms and world.compute.count() == 1
    items = {i["key"]: i["value"] for i in world.vm(out["label"])["metadata"]["items"]}
    assert int(items["gpu-runner-hold"]) == int(t0 + 1800)
    assert "jitconfig" in " ".join(items)  # the other items are kept as they were
    assert "is held for a look until" in world.logs[-1] and "--force" in world.logs[-1]
    assert stopped.removed_runner and world.gh.count() == 0  # its runner is gone; the VM stays
    assert stopped.vm.timed_by == "hold" and epoch_of(stopped.vm.deleted_at) == pytest.approx(t0 + 1800, abs=1)
    # how maintainers reach it: the job summary of stop
    text = lifecycle.hold_instructions(stopped.held, project=PROJECT, repo=REPO, entry_id="torch--held")
    assert (f"gcloud compute ssh {out['label']} --zone {out['zone']} --project {PROJECT} --tunnel-through-iap"
            in text)
    assert "-L 8888:127.0.0.1:8888" in text and "jupyter lab" in text
    assert "/opt/actions-runner/_work/runtime/runtime" in text and "gpu-runner-results/torch--held/notebooks/" in text
    # stop again while the hold lasts: kept; --force: deleted
    again = lifecycle.stop(world.ctx(), out["label"], now=t0 + 60)
    assert again.held is not None and world.compute.count() == 1
    forced = lifecycle.stop(world.ctx(), out["label"], force=True, now=t0 + 120)
    assert forced.deleted_vms and world.compute.count() == 0
    # a passing entry of the same machine: deleted as usual
    out2 = world.start("torch--held")
    passed = lifecycle.stop(world.ctx(), out2["label"])
    assert passed.held is None and passed.deleted_vms and world.compute.count() == 0


def test_stop_deletes_a_held_vm_once_its_hold_has_ended(world: World) -> None:
    out = world.start("torch--held")
    t0 = time.time()
    lifecycle.stop(world.ctx(), out["label"], hold_s=600, now=t0)
    assert world.compute.count() == 1
    late = lifecycle.stop(world.ctx(), out["label"], now=t0 + 601)
    assert late.held is None and late.deleted_vms and world.compute.count() == 0


def test_the_janitor_keeps_a_held_vm_and_ends_an_overdue_one(world: World) -> None:
    out = world.start("torch--held")
    t0 = time.time()
    lifecycle.stop(world.ctx(), out["label"], hold_s=600, now=t0)
    ctx = world.ctx()  # GitHub says the run is over: without the hold, the janitor would delete the VM
    ctx.runners.run_ended = lambda run_id, attempt: True  # type: ignore[method-assign]
    kept = lifecycle.janitor(ctx, now=t0 + 300)
    assert kept.kept == [out["label"]] and not kept.vms and world.compute.count() == 1
    assert any("held for a look until" in line for line in world.logs)
    swept = lifecycle.janitor(ctx, now=t0 + 601)
    assert swept.vms == [out["label"]] and world.compute.count() == 0
    assert any("its hold for a look ended at" in line for line in world.logs)


def test_the_janitor_never_keeps_a_hold_past_the_vms_own_lifetime(world: World) -> None:
    out = world.start("torch--held")
    vm = next(v for v in world.ctx().provider.list_ours(PROJECT, name=out["label"]))
    # a hold far in the future (as a job with the VM's credentials could write): the VM's maxRunDuration caps it
    world.ctx().provider.hold(PROJECT, vm.zone, vm.name, time.time() + 30 * 86400)
    ctx = world.ctx()
    ctx.runners.run_ended = lambda run_id, attempt: True  # type: ignore[method-assign]
    swept = lifecycle.janitor(ctx, now=vm.created + 7200 + 1800 + 1)
    assert swept.vms == [out["label"]] and world.compute.count() == 0


def test_no_hold_for_a_vm_that_already_stopped(world: World) -> None:
    out = world.start("torch--held")
    world.compute.power_off(out["label"])  # a host maintenance event stopped it (onHostMaintenance: TERMINATE)
    stopped = lifecycle.stop(world.ctx(), out["label"], hold_s=1800)
    assert stopped.held is None and stopped.deleted_vms and "stopped it (a host maintenance event)" in (
        stopped.hold_failed or "")
    assert world.compute.count() == 0


def _statuses(stdout: str) -> list[str]:
    return [line.split("gpu-runner-status: ", 1)[1].split(" ", 1)[0] for line in stdout.splitlines()
            if "gpu-runner-status: " in line]


@pytest.fixture
def vms(tmp_path: Path):
    """VMs of the startup-script tests (test_cloud_startup.VM), each in a folder of its own."""
    from test_cloud_startup import VM

    made = []

    def make() -> VM:
        folder = tmp_path / f"vm{len(made)}"
        folder.mkdir()
        made.append(VM(folder, gpus_listed=1, expected=1))
        return made[-1]

    yield make
    for vm in made:
        vm.close()


def test_the_vms_own_timer_ends_its_hold(vms) -> None:
    from test_cloud_startup import NAME, ZONE
    from test_cloud_startup import PROJECT as VM_PROJECT

    vm = vms()
    (vm.bin / "sleep").unlink()  # real sleeps: the hold is timed
    far = int(time.time()) + 3600  # stop held it for an hour, but this VM's own hold is 2 seconds
    with vm.compute.lock:
        vm.compute.instances[(VM_PROJECT, ZONE, NAME)]["metadata"]["items"].append(
            {"key": "gpu-runner-hold", "value": str(far)})
    r = vm.run(hold_s=2, hold_grace_s=30, hold_poll_s=0.1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _statuses(r.stdout)[-5:] == ["job-done", "awaiting-hold", "held", "hold-ended", "awaiting-delete"]
    held = next(line for line in r.stdout.splitlines() if "gpu-runner-status: held" in line)
    until = held.split("for a look until ", 1)[1]
    import datetime as dt
    end = dt.datetime.strptime(until, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=dt.timezone.utc).timestamp()
    assert end < far  # the VM's own cap, not what the metadata asked for
    assert "poweroff" not in vm.calls_log()  # it stays up for the janitor or its maxRunDuration


def test_without_a_hold_the_vm_goes_once_stop_has_not_held_it(vms) -> None:
    vm = vms()
    (vm.bin / "sleep").unlink()
    r = vm.run(hold_s=600, hold_grace_s=1, hold_poll_s=0.1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _statuses(r.stdout)[-3:] == ["job-done", "awaiting-hold", "awaiting-delete"]
    assert "poweroff" not in vm.calls_log()
    # and with no debug hold at all, it does not wait
    r = vms().run()
    assert "awaiting-hold" not in _statuses(r.stdout) and _statuses(r.stdout)[-1] == "awaiting-delete"


def test_stop_holds_a_failed_entry_from_the_command_line_and_says_how_to_reach_it(world: World) -> None:
    summary = world.tmp / "step_summary.md"
    env = {**world.env, "GITHUB_STEP_SUMMARY": str(summary)}

    def stop(*args: str) -> str:
        world.outputs.write_text("")
        r = gpu_runner("stop", *args, cwd=world.tmp, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    out = world.start("torch--held")
    log = stop("--matrix", str(world.matrix), "--entry", "torch--held", "--run-result", "failure")
    assert "is held for a look until" in log and world.compute.count() == 1
    assert "held=true" in world.outputs.read_text()
    text = summary.read_text()
    assert f"gcloud compute ssh {out['label']} --zone {out['zone']} --project {PROJECT} --tunnel-through-iap" in text
    assert "jupyter lab" in text and "Held for a look: `torch--held`" in text
    stop("--label", out["label"], "--project", PROJECT)  # a later stop respects the hold
    assert world.compute.count() == 1
    stop("--label", out["label"], "--project", PROJECT, "--force")
    assert world.compute.count() == 0 and world.gh.count() == 0

    # a passing entry, and a failed one whose hold the workflow input turned off for this run
    for args in (["--run-result", "success"], ["--run-result", "failure", "--debug-hold", "0"]):
        summary.write_text("")
        world.start("torch--held")
        stop("--matrix", str(world.matrix), "--entry", "torch--held", *args)
        assert world.compute.count() == 0 and "held=false" in world.outputs.read_text()
        assert summary.read_text() == ""


def test_the_workflow_input_sets_the_hold_of_one_run(world: World) -> None:
    out = world.start("torch--t4", GPU_RUNNER_DEBUG_HOLD="45m")  # the t4 machine has no debug_hold of its own
    vm = world.vm(out["label"])
    assert int(vm["scheduling"]["maxRunDuration"]["seconds"]) == 7200 + 2700
    assert "\nHOLD_S=2700\n" in {i["key"]: i["value"] for i in vm["metadata"]["items"]}["startup-script"]
    lifecycle.stop(world.ctx(), out["label"], force=True)
    r = gpu_runner("start", "--matrix", str(world.matrix), "--entry", "torch--t4", "--debug-hold", "2d",
                   cwd=world.tmp, env=world.env)
    assert r.returncode == 2 and "a debug hold is between 1m and 1d" in r.stderr and world.compute.count() == 0


# --------------------------------------------------------------------------- the report: every try, from the records


def _vm(name: str, retry: int, model: str, usd_per_hour: float, hours: float, **kw: object):
    from gpu_runner.results import VmUse

    return VmUse(name=name, retry=retry, zone="us-central1-a", region="us-central1", machine_type="g2-standard-8",
                 accelerator_type="nvidia-l4", accelerator_count=1, provisioning_model=model,
                 disk_type="pd-balanced", disk_size_gb=100, created_at="2026-12-01T10:00:00.000Z",
                 deleted_at="2026-12-01T11:00:00.000Z", lifetime_s=hours * 3600, running_s=hours * 3600,
                 timed_by="stop", usd_per_hour=usd_per_hour, price_source="table", price_as_of="2025-06-01",
                 usd=round(usd_per_hour * hours, 6), **kw)


def test_the_report_counts_every_try_from_the_records_and_no_cost_a_results_json_claims(tmp_path: Path) -> None:
    """torch--l4 was preempted on SPOT and passed on STANDARD: its cost is both VMs', as their stop jobs
    recorded them; the cost its run job's results.json claims is ignored. Every report shows it."""
    from test_report_entries import PLAN, _entry, _record, _report

    from gpu_runner.results import Cost, load_results

    root = tmp_path / "results"
    _entry(root, "gpu-runner-torch--l4", "torch--l4", status="failed", interrupted=True)
    _record(root, "gpu-runner-torch--l4.record", entry_id="torch--l4", retry=0, label="gpu-runner-9-1-torch--l4",
            start="success", run="failure", zone="us-central1-a", provisioning_model="SPOT", preempted=True,
            will_retry=True, vm=_vm("gpu-runner-9-1-torch--l4", 0, "SPOT", 0.36, 0.5))
    final = _entry(root, "gpu-runner-torch--l4.retry-1", "torch--l4", retry=1)
    forged = load_results(final)
    forged.cost = Cost(vms=[_vm("free", 1, "STANDARD", 0.0, 1.0)], usd=0.0)  # what the code under test could write
    forged.write(final)
    _record(root, "gpu-runner-torch--l4.retry-1.record", entry_id="torch--l4", retry=1, start="success",
            run="success", zone="us-central1-a", provisioning_model="STANDARD",
            vm=_vm("gpu-runner-9-1r1-torch--l4", 1, "STANDARD", 0.87, 1.0))
    _record(root, "gpu-runner-torch--a100.record", entry_id="torch--a100", retry=0, start="failure", run="skipped",
            error="no capacity")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"include": PLAN["include"][:2]}))
    assert _report(root, "--plan", str(plan)) == 3  # a100 did not run
    expected = 0.36 * 0.5 + 0.87

    cost = load_results(final).cost  # the final try's results.json now carries both tries' VMs
    assert cost is not None and [v.name for v in cost.vms] == ["gpu-runner-9-1-torch--l4", "gpu-runner-9-1r1-torch--l4"]
    assert cost.usd == pytest.approx(expected) and cost.estimate
    summary = (root / "summary.md").read_text()
    section = summary[summary.index("### What it cost"):]
    assert "Estimated cost: $1.05 for 2 VMs" in section and "(try 1)" in section and "(try 2)" in section
    assert "SPOT" in section and "STANDARD" in section and "gpu-runner's price table of 2025-06-01" in section
    assert "free" not in section
    page = (root / "index.html").read_text()
    assert "$1.05</span> estimated cost" in page and "What torch--l4 cost: $1.05 (2 VMs)" in page
    from junitparser import JUnitXml

    suites = {s.name: s for s in JUnitXml.fromfile(str(root / "junit.xml"))}
    props = {p.name: p.value for p in suites["torch--l4"].properties()}
    assert props["cost_usd_estimate"] == f"{expected:.4f}" and props["vms"] == "2"


def test_a_record_whose_vm_is_off_the_schema_is_refused(tmp_path: Path) -> None:
    from gpu_runner.errors import ConfigError
    from gpu_runner.report.collect import load_record

    good = {"schema_version": 1, "entry_id": "torch--l4", "retry": 0, "vm": _vm("x", 0, "SPOT", 0.3, 1.0).__dict__}
    f = tmp_path / "gpu-runner-try.json"
    f.write_text(json.dumps(good))
    assert load_record(f).vm.usd == pytest.approx(0.3)
    for bad, why in (({"usd": -5.0}, "vm: usd: -5.0 is less than the minimum of 0"),
                     ({"created_at": 3}, "vm: created_at"), ({"shell": "rm -rf /"}, "'shell' was unexpected")):
        f.write_text(json.dumps({**good, "vm": {**good["vm"], **bad}}))
        with pytest.raises(ConfigError, match="not a gpu-runner-try.json this version can read") as e:
            load_record(f)
        assert why in str(e.value)


def test_stop_records_the_vms_lifetime_and_cost_for_the_report(world: World) -> None:
    out = world.start("torch--l4")
    world.compute.advance(5400)
    rec_dir = world.tmp / "record"
    r = gpu_runner("stop", "--matrix", str(world.matrix), "--entry", "torch--l4", "--record", str(rec_dir),
                   "--start-result", "success", "--start-outputs", json.dumps(out), "--run-result", "success",
                   cwd=world.tmp, env=world.env)
    assert r.returncode == 0, r.stdout + r.stderr
    from gpu_runner.report.collect import load_record

    vm = load_record(rec_dir / "gpu-runner-try.json").vm
    price = json.loads(out["price"])
    assert vm is not None and vm.name == out["label"] and vm.provisioning_model == "SPOT" and vm.timed_by == "stop"
    assert world.lived(vm.lifetime_s, 5400) and vm.usd_per_hour == price["usd_per_hour"]
    assert vm.usd == pytest.approx(price["usd_per_hour"] * vm.lifetime_s / 3600, abs=2e-5)
    from gpu_runner.cost import money

    assert f"VM {out['label']} lived 1 h 30 m: {money(vm.usd)} at {money(vm.usd_per_hour, per_hour=True)} (SPOT; " \
        in r.stdout
    assert world.compute.count() == 0
