"""start / stop / janitor: one ephemeral GPU runner per matrix entry, and never a leaked VM.

``start`` registers a just-in-time runner, walks the capacity ladder (the machine's zones in
order, for each provisioning model in order: SPOT first, then STANDARD where allowed), and
waits until GitHub lists the runner online. Whatever goes wrong after the registration (no
capacity, quota, an API that keeps failing, a GPU health check that fails, a runner that never
comes online, a cancellation), ``start`` deletes what it made before it raises.

``stop`` deletes the VM wherever it is (found by name and the ``gpu-runner=1`` label across
zones) and the registration; it is idempotent. ``janitor`` deletes what the other two missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, InfraError
from ..timestamps import rfc3339
from .base import (
    OURS_LABEL,
    STATES_FAILED,
    CapacityError,
    Instance,
    Provider,
    QuotaError,
    VmRequest,
    ZoneNotOfferedError,
    gce_label_value,
    parse_status_line,
    region_of,
    status_lines,
)
from ..plan import LABEL_RE
from .startup import HEALTH_TRIES, HEALTH_WAIT_S, render

JIT_METADATA_KEY = "gpu-runner-jitconfig"
REPO_ID_LABEL = "gh-repo-id"
RUNNER_PREFIX = "gpu-runner-"
GONE = ("STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED")
SERIAL_KEEP_LINES = 200

Log = Callable[[str], None]


@dataclass
class StartOptions:
    online_timeout_s: float = 600.0
    """How long to wait for GitHub to list the runner online after the VM was created."""
    poll_s: float = 5.0
    runner_group_id: int = 1
    runner: Any = None
    """A pinned runner release (:class:`gpu_runner.github.releases.RunnerRelease`); None: the
    current release, asked of GitHub when the entry starts (or GPU_RUNNER_RUNNER_VERSION)."""
    health_tries: int = HEALTH_TRIES
    health_wait_s: float = HEALTH_WAIT_S
    provisioning_models: list[str] | None = None
    """Override the machine's capacity ladder (a retry after a preemption asks for STANDARD)."""


def retry_models(models: list[str]) -> list[str]:
    """The capacity ladder of a try after a preemption: STANDARD where the machine allows it."""
    return ["STANDARD"] if "STANDARD" in models else list(models)


@dataclass
class Started:
    label: str
    instance: str
    zone: str
    provisioning_model: str

    def outputs(self) -> dict[str, str]:
        return {"label": self.label, "instance": self.instance, "zone": self.zone,
                "provisioning-model": self.provisioning_model}


@dataclass
class Context:
    """What the three commands work with."""

    provider: Provider
    runners: Any
    """A :class:`gpu_runner.github.runners.Runners` (or None for local entries)."""
    project: str
    repo: str
    log: Log
    mask: Callable[[str], None] = lambda _s: None
    run_id: str = "local"
    attempt: str = "1"
    repo_id: str = ""
    """The repository's numeric id (``GITHUB_REPOSITORY_ID``; '' when unknown). Names collide in
    labels (``org/gpu.tests`` and ``org/gpu-tests`` are both ``org_gpu-tests``), ids never do."""
    workflow_ref: str = ""
    """``GITHUB_WORKFLOW_REF`` of the run that starts the runner: the job-started hook checks it."""
    runner_group_id: int = 1
    """The runner group the entries' runners go in; anything but the default group (1) makes them
    organisation runners (a group limited to selected workflows exists only for those)."""
    org_runners: Any = None
    """The organisation-scoped :class:`gpu_runner.github.runners.Runners` when ``runner_group_id``
    is not the default group: stop and the janitor look there too."""


def runner_scopes(ctx: Context) -> list[Any]:
    """Where this context's registrations can be: the repository's runners, and the organisation's
    when a runner group is configured."""
    return [r for r in (ctx.runners, ctx.org_runners) if r is not None]


def group_runners(ctx: Context, group_id: int) -> Any:
    """The organisation-scoped runners to register in runner group ``group_id``, once the group is
    checked: restricted to selected workflows that include this repository's gpu-runner workflow,
    and open to this repository. Anything else is a ConfigError (one line: what to set), raised
    before anything is registered."""
    from ..github.runners import group_problem, repository_is_public

    org = ctx.org_runners if ctx.org_runners is not None else ctx.runners.for_org()
    problem = group_problem(org.runner_group(group_id), group_id=group_id, repo=ctx.repo,
                            workflow_ref=ctx.workflow_ref, repo_public=repository_is_public())
    if problem:
        raise ConfigError(problem)
    return org


def vm_labels(ctx: Context, entry: Any, now: float | None = None) -> dict[str, str]:
    """The matrix's labels plus ours (DESIGN.md section 4); ``gh-repo-id`` is what the janitor
    matches, ``gh-repo`` is for people."""
    labels = {k: gce_label_value(str(v)) for k, v in (entry.gce.labels or {}).items()}
    if ctx.repo_id:
        labels[REPO_ID_LABEL] = ctx.repo_id
    labels.update({
        OURS_LABEL: "1",
        "gh-repo": gce_label_value(ctx.repo.replace("/", "_")),
        "gh-run-id": gce_label_value(ctx.run_id),
        "gh-run-attempt": gce_label_value(ctx.attempt),
        "entry": gce_label_value(entry.id),
        "created": str(int(now if now is not None else time.time())),
    })
    return labels


# --------------------------------------------------------------------------------------
# start
# --------------------------------------------------------------------------------------


def zones_text(zones: list[str]) -> str:
    """``us-central1-a, -b, -c``: the first zone in full, the others of its region by letter."""
    if not zones:
        return ""
    region = zones[0].rsplit("-", 1)[0]
    return ", ".join([zones[0], *(f"-{z.rsplit('-', 1)[1]}" if z.rsplit("-", 1)[0] == region else z
                                  for z in zones[1:])])


def _ladder(ctx: Context, req: VmRequest, spec: Any, models: list[str]) -> Instance:
    """Create the VM on the first rung that takes it: for each provisioning model in order, each
    zone in order.

    * No capacity (a stockout): the next zone.
    * The zone does not offer the machine type or accelerator: that zone is skipped for every model.
    * A regional quota: the rest of that region is skipped, for that model alone when the quota is
      the model's own (``PREEMPTIBLE_*``: Spot VMs count against it where the project has it),
      else for every model (both count against it).
    * A global quota (``GPUS_ALL_REGIONS``): no zone can help; the ladder stops.
    """
    if not spec.zones:
        raise ConfigError(f"machine of entry {req.name}: no zones to create the VM in (set zones:)")
    not_offered: dict[str, str] = {}
    """zone -> why: the zone does not offer what the VM needs."""
    barred: dict[tuple[str, str], QuotaError] = {}
    """(region, model) -> the quota that bars it."""
    stockouts = 0
    for model in models:
        for zone in spec.zones:
            region = region_of(zone)
            if zone in not_offered or (region, model) in barred:
                continue
            ctx.log(f"creating VM {req.name}: {spec.machine_type} ({model}) in {zone}")
            try:
                return ctx.provider.create(req, zone, model)
            except CapacityError as e:
                stockouts += 1
                ctx.log(f"no capacity: {e}; trying the next {'zone' if zone != spec.zones[-1] else 'rung'}")
            except ZoneNotOfferedError as e:
                not_offered[zone] = str(e)
                ctx.log(f"{e}; skipping {zone}")
            except QuotaError as e:
                if e.is_global:
                    raise QuotaError(f"no VM for {spec.machine_type}: {e}", metric=e.metric, region=None,
                                     limit=e.limit) from None
                bars = [model] if e.preemptible else list(models)
                for m in bars:
                    barred.setdefault((e.region or region, m), e)
                ctx.log(f"{e}; skipping the rest of {e.region} for {', '.join(bars)}")
    raise _no_vm(spec, models, stockouts, not_offered, barred)


def _no_vm(spec: Any, models: list[str], stockouts: int, not_offered: dict[str, str],
           barred: dict[tuple[str, str], QuotaError]) -> InfraError:
    """Why no rung of the ladder made the VM: the first line says it whole (it becomes the entry's
    reason), the lines after it what to do."""
    where = f"{spec.machine_type} in {zones_text(spec.zones)} ({', '.join(models)})"
    quotas = list(dict.fromkeys(str(q) for q in barred.values()))
    if not quotas and not not_offered:
        hint = "" if "STANDARD" in models else "; allow STANDARD (spot: preferred),"
        return InfraError(f"no capacity for {where}\nAdd zones to the machine{hint} or retry later.")
    if len(quotas) == 1 and not stockouts and not not_offered:
        q = next(iter(barred.values()))
        return QuotaError(f"no VM for {where}: {quotas[0]}", metric=q.metric, region=q.region, limit=q.limit)
    parts = []
    for q in dict.fromkeys((q.metric, q.region) for q in barred.values()):
        parts.append(f"quota {q[0]} exceeded in region {q[1]}")
    if not_offered:
        parts.append(f"not offered in {', '.join(not_offered)}")
    if stockouts:
        parts.append("no capacity in the other zones" if parts else "no capacity")
    details = quotas + list(not_offered.values())
    return InfraError(f"no VM for {where}: {'; '.join(parts)}\n" + "\n".join(details) +
                      "\nAdd zones that offer the machine to it, or retry later.")


def _wait_online(ctx: Context, inst: Instance, runner_id: int, opts: StartOptions) -> None:
    deadline = time.monotonic() + opts.online_timeout_s
    offset = 0
    serial: list[str] = []
    said = ""
    while True:
        runner = ctx.runners.get(runner_id)
        if runner is not None and runner.status == "online":
            ctx.log(f"runner {inst.name} is online")
            return
        if runner is None:
            raise InfraError(f"runner registration {inst.name} disappeared while waiting for it to come online")
        vm = ctx.provider.get(ctx.project, inst.zone, inst.name)
        if vm is not None and vm.status == "RUNNING":
            text, offset = ctx.provider.serial_output(ctx.project, inst.zone, inst.name, offset)
            serial = (serial + text.splitlines())[-SERIAL_KEEP_LINES:]
        st = parse_status_line("\n".join(serial))
        tail = "\n".join(serial[-40:]) or "(no serial console output)"
        if st and st[0] in STATES_FAILED:
            raise InfraError(f"VM {inst.name} in {inst.zone}: {st[0]}: {st[1]}\nlast serial console lines:\n{tail}")
        if vm is None or vm.status in GONE:
            preempted = ctx.provider.was_preempted(ctx.project, [inst.zone], inst.name)
            what = "was preempted" if preempted else ("is gone" if vm is None else f"is {vm.status}")
            raise InfraError(f"VM {inst.name} in {inst.zone} {what} before its runner came online\n"
                             f"last serial console lines:\n{tail}")
        now_saying = (f"waiting for VM {inst.name} ({vm.status})" if vm.status != "RUNNING" else
                      f"waiting for runner {inst.name} to come online (VM running"
                      f"{', ' + st[0] if st else ''})")
        if now_saying != said:
            ctx.log(now_saying)
            said = now_saying
        if time.monotonic() >= deadline:
            raise InfraError(f"runner {inst.name} did not come online within {opts.online_timeout_s:.0f}s "
                             f"(VM {vm.status} in {inst.zone})\nlast serial console lines:\n{tail}")
        time.sleep(opts.poll_s)


JOB_KEYS = ("repository", "repository-id", "run-id", "run-attempt", "workflow-ref")
"""What the VM's job-started hook holds the job to (metadata ``gpu-runner-job-<key>``), from the
environment of the run that starts it: GITHUB_REPOSITORY, GITHUB_REPOSITORY_ID, GITHUB_RUN_ID,
GITHUB_RUN_ATTEMPT, GITHUB_WORKFLOW_REF."""
JOB_KEY_PREFIX = "gpu-runner-job-"


def job_expectation(ctx: Context, env: Any = None) -> dict[str, str]:
    """The metadata that says which job this runner is for (the hook refuses every other one):
    repository and its id, and in GitHub Actions the run id, attempt and workflow ref. Values
    that are not one plain line are dropped (the hook compares strings, it runs none)."""
    import os

    env = os.environ if env is None else env
    run_id = env.get("GITHUB_RUN_ID", "").strip()
    values = {"repository": ctx.repo, "repository-id": ctx.repo_id,
              "run-id": run_id, "run-attempt": env.get("GITHUB_RUN_ATTEMPT", "").strip() if run_id else "",
              "workflow-ref": ctx.workflow_ref if run_id else ""}
    return {JOB_KEY_PREFIX + k: v for k, v in values.items()
            if v and "\n" not in v and "\r" not in v and len(v) < 1024}


def _hiding(log: Log, secret: str) -> Log:
    """``log`` with ``secret`` (the label's nonce) replaced: start's log is public, and the label
    must not be known before the run job that needs it is queued."""
    return lambda text: log(text.replace(secret, "*" * len(secret)))


def start(ctx: Context, entry: Any, opts: StartOptions | None = None) -> Started:
    """Register the runner, create the VM, wait until the runner is online. Cleans up on failure.

    The label is the plan's with a fresh nonce (:func:`gpu_runner.plan.label_with_nonce`); the log
    never shows the nonce (only the step output carries the label, to the run job)."""
    from dataclasses import replace

    from ..plan import label_with_nonce, new_nonce

    opts = opts or StartOptions()
    spec = entry.gce
    from ..github.releases import resolve_runner_release

    if opts.runner_group_id != 1:  # an organisation runner, in a group checked first
        ctx = replace(ctx, runners=group_runners(ctx, opts.runner_group_id))
    nonce = new_nonce()
    label = label_with_nonce(entry.id, entry.label, nonce)
    ctx = replace(ctx, log=_hiding(ctx.log, nonce))
    where = getattr(ctx.runners, "where", ctx.repo)
    ctx.log(f"registering just-in-time runner {label} in {where} (label {label}, runner group "
            f"{opts.runner_group_id})")
    jit = ctx.runners.create_jit(label, [label], runner_group_id=opts.runner_group_id)
    ctx.mask(jit.encoded_jit_config)
    done = False
    try:
        # the current runner release (or the pin): GitHub gives jobs only to a current runner
        release = resolve_runner_release(getattr(ctx.runners, "gh", None), pin=opts.runner)
        ctx.log(f"runner {release.version} ({release.source}; sha256 {release.sha256[:12]}...)")
        script = render(expected_gpus=entry.gpu_count, runner_version=release.version,
                        runner_sha256=release.sha256, health_tries=opts.health_tries,
                        health_wait_s=opts.health_wait_s, self_delete=bool(getattr(spec, "self_delete", False)),
                        docker=bool(entry.container), hold_s=int(getattr(spec, "debug_hold_s", 0) or 0),
                        idle_timeout_s=spec.idle_timeout_s)
        metadata = {"startup-script": script, JIT_METADATA_KEY: jit.encoded_jit_config,
                    "block-project-ssh-keys": "true", "enable-guest-attributes": "TRUE", **job_expectation(ctx)}
        if entry.gpu_count:
            metadata["install-nvidia-driver"] = "True"  # Deep Learning VM images install it on first boot
        req = VmRequest(name=label, project=ctx.project, spec=spec, labels=vm_labels(ctx, entry), metadata=metadata)
        inst = _ladder(ctx, req, spec, list(opts.provisioning_models or spec.provisioning_models))
        ctx.log(f"VM {label} created in {inst.zone} ({inst.provisioning_model})")
        _wait_online(ctx, inst, jit.runner.id, opts)
        done = True
        return Started(label=label, instance=label, zone=inst.zone, provisioning_model=inst.provisioning_model)
    finally:
        if not done:
            ctx.log(f"start of {label} failed or was cancelled: deleting its VM and registration")
            _cleanup(ctx, label, jit.runner.id)


def _cleanup(ctx: Context, label: str, runner_id: int | None) -> None:
    errors = []
    try:
        for vm in ctx.provider.list_ours(ctx.project, name=label):
            ctx.provider.delete(ctx.project, vm.zone, vm.name)
            ctx.log(f"deleted VM {vm.name} in {vm.zone}")
    except Exception as e:  # keep going: the registration must go too
        errors.append(f"VM: {e}")
    try:
        if runner_id is not None and ctx.runners.delete(runner_id):
            ctx.log(f"removed runner registration {label}")
    except Exception as e:
        errors.append(f"registration: {e}")
    for err in errors:
        ctx.log(f"cleanup of {label} incomplete ({err}); `gpu-runner stop --label {label}` or the janitor retries")


# --------------------------------------------------------------------------------------
# stop
# --------------------------------------------------------------------------------------


@dataclass
class VmSeen:
    """What ``stop`` saw of the VM: where, which provisioning model, and its times (RFC 3339)."""

    name: str
    zone: str | None = None
    provisioning_model: str | None = None
    created_at: str | None = None
    deleted_at: str | None = None
    last_stop_at: str | None = None
    timed_by: str | None = None
    """``stop`` (found and deleted it), ``operations`` (gone before: its own operations), ``hold``."""
    held_until: float | None = None
    note: str | None = None


@dataclass
class Stopped:
    label: str
    deleted_vms: list[str] = field(default_factory=list)
    preempted: bool = False
    removed_runner: bool = False
    vm: VmSeen | None = None
    """The VM of this label, as stop saw it (None when there was none to see)."""
    held: Instance | None = None
    """The VM kept for a look (its hold has not ended), if any."""
    hold_failed: str | None = None
    """Why a hold that was asked for could not be set."""
    job: str | None = None
    """The job of this run attempt the runner ran (``<name> (id <id>)``), as GitHub lists it."""
    hijack: str | None = None
    """Set when the runner served a job it was not made for: what says so."""

    def summary(self) -> str:
        parts = []
        if self.held is not None and self.held.hold_until is not None:
            parts.append(f"VM {self.held.name} ({self.held.zone}) is held for a look until "
                         f"{_clock(self.held.hold_until)}; `gpu-runner stop --label {self.label} --force` deletes it now")
        if self.hold_failed:
            parts.append(f"no hold: {self.hold_failed}")
        if self.deleted_vms:
            parts.append(f"deleted VM {', '.join(self.deleted_vms)}")
        if self.preempted:
            parts.append("the VM was preempted (Spot capacity reclaimed by Compute Engine)")
        if self.job:
            parts.append(f"its runner ran job {self.job}")
        if self.hijack:
            parts.append(f"HIJACK: {self.hijack}")
        if self.removed_runner:
            parts.append("removed the runner registration")
        return f"{self.label}: " + ("; ".join(parts) if parts else "nothing left to delete (already gone)")


def held_until(vm: Instance, max_age_s: float = 3 * 3600.0) -> float | None:
    """When the VM's hold for a look ends, or None when it is not held: the hold it carries,
    never past its own hard lifetime (created + maxRunDuration, which covers the hold), whatever
    its metadata says."""
    if vm.hold_until is None:
        return None
    if vm.created is None:
        return vm.hold_until
    return min(vm.hold_until, vm.created + (vm.max_run_duration_s or max_age_s))


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


HIJACK_STATE = "hijack"
"""The status the VM's job-started hook makes the startup script say when a job of another run
took the runner (serial console and guest attribute)."""
RAN_A_JOB = ("job-done", "runner-failed", "awaiting-hold", "held", "hold-ended")


def _vm_states(ctx: Context, vm: Instance) -> list[str]:
    """Every ``gpu-runner-status`` state the VM's serial console shows, in order ([] when unreadable)."""
    try:
        text, _ = ctx.provider.serial_output(ctx.project, vm.zone, vm.name, 0)
    except Exception:  # noqa: BLE001 - a console we cannot read says nothing
        return []
    return [state for state, _detail in status_lines(text)]


def _check_job(ctx: Context, out: Stopped, states: list[str], run_result: str | None) -> None:
    """Which job of this run attempt the runner ran (GitHub's jobs list: ``runner_name``), and
    whether it served another run's job: the VM said ``hijack`` (its hook refused the job), or it
    ran a job while no job of this attempt ran on it and the run job did not pass."""
    if HIJACK_STATE in states:
        out.hijack = ("the runner was taken by a job of another workflow run; its job-started hook refused it "
                      "and ended the VM (this entry's run job never got it)")
    if ctx.runners is None or not str(ctx.run_id).isdigit() or not hasattr(ctx.runners, "jobs_on"):
        return
    try:
        jobs = ctx.runners.jobs_on(ctx.run_id, ctx.attempt, out.label)
    except Exception as e:  # noqa: BLE001 - the record is worth a line, not a failed stop
        ctx.log(f"could not ask GitHub which job ran on {out.label}: {e}")
        return
    if jobs:
        out.job = ", ".join(f"{j['name']} (id {j['id']})" for j in jobs)
    elif out.hijack is None and any(s in RAN_A_JOB for s in states) and run_result not in ("success", None):
        out.hijack = ("the runner ran a job, and no job of this run attempt ran on it: a job of another workflow "
                      "run took it")


def stop(ctx: Context, label: str, zones: list[str] | None = None, *, hold_s: float | None = None,
         force: bool = False, now: float | None = None, run_result: str | None = None) -> Stopped:
    """Delete the VM named ``label`` wherever it is, and its registration. Idempotent.

    A VM held for a look (metadata ``gpu-runner-hold``) stays until its hold ends, unless
    ``force``. ``hold_s`` (a failed entry whose machine has ``debug_hold``) holds a running VM
    for that long instead of deleting it. Before it deletes anything it records which job the
    runner ran and whether that was a job of another run (``hijack``; a hijacked VM is never held)."""
    now = time.time() if now is None else now
    out = Stopped(label=label)
    vms = ctx.provider.list_ours(ctx.project, name=label)
    states = [st for vm in vms for st in _vm_states(ctx, vm)]
    _check_job(ctx, out, states, run_result)
    if out.hijack:
        hold_s = None
    for vm in vms:
        seen = VmSeen(name=vm.name, zone=vm.zone, provisioning_model=vm.provisioning_model,
                      created_at=vm.created_at, last_stop_at=vm.last_stop_at, timed_by="stop")
        out.vm = out.vm or seen
        hold_end = held_until(vm)
        until = None  # when the hold this VM stays for ends
        if hold_end is not None and now < hold_end and not force:
            until = hold_end
        elif hold_s and vm.hold_until is None and not force:
            if vm.status != "RUNNING":
                out.hold_failed = (f"the VM is {vm.status}: Compute Engine stopped it (a host maintenance event) "
                                   "before stop could hold it")
            elif ctx.provider.hold(ctx.project, vm.zone, vm.name, now + hold_s):
                until = now + hold_s
            else:
                out.hold_failed = "the VM was gone before it could be held"
        if until is not None:
            vm.hold_until = until
            out.held, seen.held_until, seen.timed_by = vm, until, "hold"
            seen.deleted_at = rfc3339(until)
            continue
        if vm.status in GONE and vm.provisioning_model == "SPOT":
            out.preempted = out.preempted or ctx.provider.was_preempted(ctx.project, [vm.zone], vm.name)
        seen.deleted_at = ctx.provider.delete_timed(ctx.project, vm.zone, vm.name) or rfc3339(time.time())
        out.deleted_vms.append(f"{vm.name} ({vm.zone}, {vm.status})")
    if not vms and zones:
        out.preempted = ctx.provider.was_preempted(ctx.project, zones, label)
        times = ctx.provider.lifetime(ctx.project, zones, label)
        if times.created_at:
            out.vm = VmSeen(name=label, zone=times.zone, created_at=times.created_at, deleted_at=times.deleted_at,
                            timed_by="operations")
            if not times.deleted_at:
                out.vm.deleted_at = rfc3339(now)
                out.vm.note = "gone before stop, by no operation it could find: counted until stop found it gone"
    for runners in runner_scopes(ctx):
        runner = runners.find(label)
        if runner is not None:
            out.removed_runner = runners.delete(runner.id) or out.removed_runner
    ctx.log(out.summary())
    return out


RUNNER_WORK_DIR = "/opt/actions-runner/_work"
"""Where the startup script's runner keeps its jobs' workspaces on the VM."""


def hold_instructions(vm: Instance, *, project: str, repo: str, entry_id: str, results_dir: str = "gpu-runner-results"
                      ) -> str:
    """Markdown for the job summary: how maintainers reach a VM held for a look, and open a
    Jupyter server on it with the executed notebooks in place. Never for a pull request's comment."""
    name, zone = vm.name, vm.zone
    repo_name = repo.rsplit("/", 1)[-1] or "repo"
    workspace = f"{RUNNER_WORK_DIR}/{repo_name}/{repo_name}"
    until = _clock(vm.hold_until) if vm.hold_until is not None else "the end of its hold"
    ssh = f"gcloud compute ssh {name} --zone {zone} --project {project} --tunnel-through-iap"
    return "\n".join([
        f"### 🔍 Held for a look: `{entry_id}`",
        "",
        f"The entry failed, so its VM `{name}` ({zone}) is kept until **{until}** (`debug_hold`) instead of "
        "being deleted; then it goes by itself (Compute Engine's maxRunDuration and the janitor make sure). "
        f"Done sooner: `gcloud compute instances delete {name} --zone {zone} --project {project} --quiet` "
        f"(or `gpu-runner stop --label {name} --project {project} --force`).",
        "",
        "Log in (through Identity-Aware Proxy: a firewall rule that lets 35.235.240.0/20 reach port 22, and "
        "the IAP-secured Tunnel User role):",
        "",
        "```sh",
        ssh,
        "```",
        "",
        "Jupyter with the executed notebooks in place: forward a port through the same tunnel, start a server in "
        "the job's workspace, and open the `http://127.0.0.1:8888/lab?token=...` address it prints:",
        "",
        "```sh",
        f"{ssh} -- -L 8888:127.0.0.1:8888",
        f"cd {workspace} && sudo -u gpu-runner -H jupyter lab --no-browser --ip 127.0.0.1 --port 8888",
        "```",
        "",
        f"The executed notebooks are in `{results_dir}/{entry_id}/notebooks/` there. A Deep Learning VM image has "
        "JupyterLab; on another, `python3 -m pip install --user jupyterlab` first.",
        "",
    ])


# --------------------------------------------------------------------------------------
# janitor
# --------------------------------------------------------------------------------------


NAME_RE = LABEL_RE
"""The full name of what ``start`` makes (VM and runner): ``gpu-runner-<run id>-<attempt>-<nonce>-<entry id>``,
the attempt part ``<attempt>r<N>`` for the Nth retry of a preempted entry."""


def labels_of(ctx: Context, entry: Any) -> list[str]:
    """The labels ``start`` made for this try of ``entry`` that are still there (VMs, registrations),
    found by name: for a stop whose start said nothing (its job was cancelled or died)."""
    from ..plan import label_is_for, label_run_prefix

    names = {vm.name for vm in ctx.provider.list_ours(ctx.project, {"entry": gce_label_value(entry.id)})
             if label_is_for(entry, vm.name)}
    prefix = label_run_prefix(entry.label)
    for runners in runner_scopes(ctx):
        names |= {r.name for r in runners.list(prefix or RUNNER_PREFIX)
                  if label_is_for(entry, r.name)}
    return sorted(names)
DEFAULT_LIFETIME_S = 3 * 3600.0
DEFAULT_MARGIN_S = 30 * 60.0


@dataclass
class Swept:
    vms: list[str] = field(default_factory=list)
    runners: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Our VMs left running: their run is in progress, or they are young and GitHub cannot tell."""
    left_alone: list[str] = field(default_factory=list)
    """VMs and registrations that are not this repository's (or not provably ours), never touched."""


def janitor(ctx: Context, *, max_age_s: float = DEFAULT_LIFETIME_S, margin_s: float = DEFAULT_MARGIN_S,
            dry_run: bool = False, now: float | None = None) -> Swept:
    """Delete what this repository's runs left behind, and nothing else.

    A VM is a candidate only when it carries ``gpu-runner=1``, this repository's id as ``gh-repo-id``
    (names collide as label values, ids do not), and a name of the full pattern
    ``gpu-runner-<run>-<attempt>-<nonce>-<entry>`` that agrees with its
    ``gh-run-id`` / ``gh-run-attempt`` labels. It is deleted when GitHub says that attempt of its
    workflow run is over; it stays while GitHub reports it queued or in progress, however old, and
    is left alone when GitHub answers 404 for the run (not this repository's to judge).
    When GitHub cannot tell (a ``local`` run), it is deleted once older than its own
    maxRunDuration (else ``max_age_s``) plus ``margin_s``. A VM held for a look (a failed entry's,
    metadata ``gpu-runner-hold``) stays until its hold ends and is deleted once it has, whatever
    its run is doing.

    A runner registration is deleted only when its name has the full pattern, it carries its name as
    its label (as every just-in-time runner ``start`` registers does), it is offline and idle, no VM
    of that name is left, and its run is over. With a runner group, the organisation's registrations
    are swept too, under the same rules, and only those in that group: one whose run GitHub answers
    404 for (another repository's run) is left alone."""
    now = time.time() if now is None else now
    if not ctx.repo_id.isdigit():
        raise ConfigError("the janitor needs the repository's numeric id in GITHUB_REPOSITORY_ID (GitHub Actions "
                          "sets it; elsewhere: gh api repos/OWNER/NAME --jq .id): it deletes only VMs labelled "
                          "with it, as names can collide")
    out = Swept()
    verb = "would delete" if dry_run else "deleted"
    my_repo = ctx.repo_id
    ended: dict[tuple[str, str], bool | None] = {}

    def run_ended(run_id: str, attempt: str) -> bool | None:
        if ctx.runners is None:
            return None
        if (run_id, attempt) not in ended:
            ended[(run_id, attempt)] = ctx.runners.run_ended(run_id, attempt)
        return ended[(run_id, attempt)]

    live: set[str] = set()
    for vm in ctx.provider.list_ours(ctx.project, {REPO_ID_LABEL: my_repo}):
        m = NAME_RE.match(vm.name)
        if vm.labels.get(REPO_ID_LABEL) != my_repo or m is None or vm.labels.get(
                "gh-run-id") != m.group("run") or vm.labels.get("gh-run-attempt") != m.group("attempt"):
            out.left_alone.append(vm.name)
            ctx.log(f"left alone VM {vm.name} in {vm.zone}: not named and labelled as a VM of {ctx.repo}")
            continue
        live.add(vm.name)
        run, attempt = m.group("run"), m.group("attempt")
        hold_end = held_until(vm, max_age_s)
        if hold_end is not None:  # a failed entry's VM held for a look: its hold decides, not its run
            if now < hold_end:
                out.kept.append(vm.name)
                ctx.log(f"kept VM {vm.name}: held for a look until {_clock(hold_end)}")
                continue
            why = f"its hold for a look ended at {_clock(hold_end)}"
        else:
            state = run_ended(run, attempt)
            age = vm.age_s(now)
            lifetime = (vm.max_run_duration_s or max_age_s) + margin_s
            if state is False:
                out.kept.append(vm.name)
                ctx.log(f"kept VM {vm.name}: workflow run {run} (attempt {attempt}) is in progress")
                continue
            if state is None and run != "local":  # GitHub does not know the run here: not ours to judge
                out.left_alone.append(vm.name)
                ctx.log(f"left alone VM {vm.name} in {vm.zone}: workflow run {run} is not one of {ctx.repo} "
                        "(GitHub answers 404); its maxRunDuration ends it")
                continue
            if state is True:
                why = f"workflow run {run} (attempt {attempt}) has ended"
            elif age is not None and age > lifetime:
                why = f"{age / 3600:.1f} h old, past its {lifetime / 3600:.1f} h lifetime and margin"
            else:
                out.kept.append(vm.name)
                ctx.log(f"kept VM {vm.name}: no workflow run to ask about, and not past its lifetime")
                continue
        if not dry_run:
            ctx.provider.delete(ctx.project, vm.zone, vm.name)
        out.vms.append(vm.name)
        live.discard(vm.name)
        ctx.log(f"{verb} VM {vm.name} in {vm.zone} ({vm.status}): {why}")
    for runners in runner_scopes(ctx):
        org = getattr(runners, "org", None)
        for r in runners.list(RUNNER_PREFIX):
            m = NAME_RE.match(r.name)
            if m is None or r.name not in r.labels or (org and r.group_id != ctx.runner_group_id):
                out.left_alone.append(r.name)
                ctx.log(f"left alone runner {r.name}: not a just-in-time runner that gpu-runner registers"
                        + (f" in runner group {ctx.runner_group_id}" if org else ""))
                continue
            if r.status != "offline" or r.busy or r.name in live or m.group("run") == "local":
                continue
            state = run_ended(m.group("run"), m.group("attempt"))
            if state is None and org:
                out.left_alone.append(r.name)
                ctx.log(f"left alone runner {r.name} of organisation {org}: workflow run {m.group('run')} is not "
                        f"one of {ctx.repo} (GitHub answers 404)")
                continue
            if state is not True:
                continue
            if not dry_run:
                runners.delete(r.id)
            out.runners.append(r.name)
            ctx.log(f"{verb} offline runner registration {r.name}"
                    f"{f' of organisation {org}' if org else ''}: its workflow run has ended")
    if not out.vms and not out.runners:
        ctx.log("nothing to delete")
    return out


# --------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------


def project_for(entry: Any | None, explicit: str | None = None, env: Any = None) -> str:
    """The GCP project: --project, else the matrix file's gce.project, else GOOGLE_CLOUD_PROJECT."""
    import os

    env = os.environ if env is None else env
    project = explicit or (entry.gce.project if entry is not None and entry.gce else None) or env.get(
        "GOOGLE_CLOUD_PROJECT")
    if not project:
        raise ConfigError("no GCP project: set gce.project in the matrix file, pass --project, or set "
                          "GOOGLE_CLOUD_PROJECT")
    return project


def make_context(project: str, *, log: Log, mask: Callable[[str], None] = lambda _s: None,
                 github: bool = True, runner_group_id: int = 1) -> Context:
    """A context on Compute Engine and this repository's runners, from the environment; with a
    runner group other than the default (1), on its organisation's runners too."""
    import os

    from ..errors import require_extra

    require_extra("gce", "starting and stopping Compute Engine VMs")
    if github:
        require_extra("github", "registering GitHub runners")
    from ..github.client import client, repository
    from ..github.runners import Runners
    from ..plan import run_identity
    from .gce import GceProvider

    repo = repository()
    runners = Runners(client(), repo) if github else None
    run_id, attempt = run_identity()
    repo_id = os.environ.get("GITHUB_REPOSITORY_ID", "").strip()
    return Context(provider=GceProvider(log=log), runners=runners, project=project, repo=repo, log=log, mask=mask,
                   run_id=run_id, attempt=attempt, repo_id=repo_id if repo_id.isdigit() else "",
                   workflow_ref=os.environ.get("GITHUB_WORKFLOW_REF", ""), runner_group_id=runner_group_id,
                   org_runners=runners.for_org() if runners is not None and runner_group_id != 1 else None)
