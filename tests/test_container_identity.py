"""A container job next to a service account is refused (exit 2, one line): the runner's user
drives Docker, which is root on the VM (`docker run --network host`, `-v /:/host`), so no firewall
keeps the job from the service account's token on the metadata server. Docker's own documentation
says it: "only trusted users should be allowed to control your Docker daemon"
(https://docs.docker.com/engine/security/#docker-daemon-attack-surface). The startup script refuses
it too (test_cloud_startup), for a VM made by other means."""

from __future__ import annotations

from pathlib import Path

from conftest import gpu_runner

MATRIX = """\
version: 1
gce: {{project: test-project, region: us-central1{sa}}}
machines:
  l4: {{machine_type: g2-standard-8, zones: [a]}}
  box: {{provider: local}}
runtimes:
  torch:
    container: pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime
    notebooks: [nb.ipynb]
{machines}"""


def _plan(tmp_path: Path, *, sa: bool, machines: str = "") -> tuple[int, str]:
    (tmp_path / "nb.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    text = MATRIX.format(sa=", service_account: vm@test-project.iam.gserviceaccount.com" if sa else "",
                         machines=machines)
    (tmp_path / "matrix.yml").write_text(text)
    r = gpu_runner("plan", "--matrix", "matrix.yml", cwd=tmp_path)
    return r.returncode, r.stdout + r.stderr


def test_a_container_runtime_on_a_gce_machine_with_a_service_account_is_refused(tmp_path: Path) -> None:
    rc, out = _plan(tmp_path, sa=True)
    assert rc == 2, out
    assert "runtimes.torch.container" in out and "gce.service_account" in out and "root on the VM" in out
    assert "Traceback" not in out


def test_without_a_service_account_or_on_local_machines_it_is_allowed(tmp_path: Path) -> None:
    rc, out = _plan(tmp_path, sa=False)
    assert rc == 0, out
    rc, out = _plan(tmp_path, sa=True, machines="    machines: [box]\n")
    assert rc == 0, out
